"""API keys over HTTP: 401 without, 403 with the wrong scope, 200 with the right one."""

from __future__ import annotations

import logging
import uuid

import pytest
from sqlalchemy import inspect, select

from core.settings import Settings
from core.storage.base import Base
from core.storage.engine import get_engine
from tests.conftest import make_settings


def test_no_key_is_401(client) -> None:
    response = client.get("/v1/jobs")
    assert response.status_code == 401
    assert "missing API key" in response.json()["detail"]
    assert response.headers["www-authenticate"] == "Bearer"


def test_unknown_key_is_401(client) -> None:
    response = client.get("/v1/jobs", headers={"X-API-Key": "ts_not-a-real-key-0000000000"})
    assert response.status_code == 401
    assert response.json()["detail"] == "invalid or revoked API key"


def test_wrong_scope_is_403_and_right_scope_200(client, api_key) -> None:
    support = api_key("support")
    admin = api_key("admin")
    body = {"kind": "core.worker_info"}
    refused = client.post("/v1/jobs", json=body, headers={"X-API-Key": support})
    assert refused.status_code == 403
    assert "lacks the 'admin' scope" in refused.json()["detail"]
    accepted = client.post("/v1/jobs", json=body, headers={"Authorization": f"Bearer {admin}"})
    assert accepted.status_code == 202


def test_job_status_is_visible_only_to_its_scope(client, api_key) -> None:
    admin, sentiment = api_key("admin"), api_key("sentiment")
    job = client.post(
        "/v1/jobs", json={"kind": "core.worker_info"}, headers={"X-API-Key": admin}
    ).json()
    assert client.get(f"/v1/jobs/{job['id']}", headers={"X-API-Key": admin}).status_code == 200
    forbidden = client.get(f"/v1/jobs/{job['id']}", headers={"X-API-Key": sentiment})
    assert forbidden.status_code == 403
    listed = client.get("/v1/jobs", headers={"X-API-Key": sentiment})
    assert listed.status_code == 200 and listed.json() == []
    refused = client.post(f"/v1/jobs/{job['id']}/cancel", headers={"X-API-Key": sentiment})
    assert refused.status_code == 403 and "belongs to the 'admin' scope" in refused.text
    unknown = client.post(f"/v1/jobs/{uuid.uuid4()}/cancel", headers={"X-API-Key": admin})
    assert unknown.status_code == 404


def test_revoked_key_is_401(client, api_key, service_settings: Settings) -> None:
    from core.security import revoke_api_key
    from core.storage.engine import get_session_factory, session_scope
    from core.storage.models import ApiKey

    key = api_key("support")
    with session_scope(get_session_factory(service_settings.database_url)) as session:
        revoke_api_key(session, session.scalars(select(ApiKey)).one().id)
    assert client.get("/v1/jobs", headers={"X-API-Key": key}).status_code == 401


def test_a_checked_key_is_trusted_until_the_cache_time_passes(
    client, api_key, service_settings: Settings
) -> None:
    from core.security import revoke_api_key
    from core.storage.engine import get_session_factory, session_scope
    from core.storage.models import ApiKey

    key = api_key("support")
    assert client.get("/v1/jobs", headers={"X-API-Key": key}).status_code == 200
    with session_scope(get_session_factory(service_settings.database_url)) as session:
        revoke_api_key(session, session.scalars(select(ApiKey)).one().id)
    # Within `api_key_cache_s` this process still trusts the key it checked...
    assert service_settings.api_key_cache_s > 0
    assert client.get("/v1/jobs", headers={"X-API-Key": key}).status_code == 200
    # ...and once that has passed it asks the database again.
    client.app.state.api_keys.clear()
    assert client.get("/v1/jobs", headers={"X-API-Key": key}).status_code == 401


def test_without_a_key_cache_revocation_is_immediate(api_key, sqlite_url: str, tmp_path) -> None:
    from fastapi.testclient import TestClient

    from core.security import revoke_api_key
    from core.storage.engine import get_session_factory, session_scope
    from core.storage.models import ApiKey
    from textsuite.service import create_service

    settings = make_settings(database_url=sqlite_url, var_dir=tmp_path / "var", api_key_cache_s=0)
    key = api_key("support")
    with TestClient(create_service(settings)) as client:
        assert client.get("/v1/jobs", headers={"X-API-Key": key}).status_code == 200
        with session_scope(get_session_factory(sqlite_url)) as session:
            revoke_api_key(session, session.scalars(select(ApiKey)).one().id)
        assert client.get("/v1/jobs", headers={"X-API-Key": key}).status_code == 401


def test_a_key_over_its_rate_limit_gets_429_with_retry_after(
    client, api_key, service_settings: Settings
) -> None:
    from core.security import create_api_key
    from core.storage.engine import get_session_factory, session_scope

    with session_scope(get_session_factory(service_settings.database_url)) as session:
        slow = create_api_key(session, "slow partner", ["support"], rate_limit_per_s=1)[1]
    other = api_key("support")
    answers = [client.get("/v1/jobs", headers={"X-API-Key": slow}) for _ in range(3)]
    assert [a.status_code for a in answers[:2]] == [200, 200]  # a burst of 2 s at 1/s
    refused = answers[2]
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert "rate limit of 1 requests/s" in refused.json()["detail"]
    # Another key is not held back by this one.
    assert client.get("/v1/jobs", headers={"X-API-Key": other}).status_code == 200


def test_key_never_stored_or_logged_in_clear(
    client, api_key, service_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    key = api_key("admin")
    with caplog.at_level(logging.DEBUG):
        client.get("/v1/jobs", headers={"X-API-Key": key})
        client.post("/v1/jobs", json={"kind": "nope"}, headers={"X-API-Key": key})
        client.get("/v1/jobs", headers={"X-API-Key": key + "wrong"})
    assert caplog.records, "expected request logs to inspect"
    assert all(key not in record.getMessage() for record in caplog.records)

    engine = get_engine(service_settings.database_url)
    with engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            if table.name not in inspect(engine).get_table_names():
                continue
            for row in connection.execute(table.select()):
                assert all(key not in str(value) for value in row)


def test_bootstrap_key_from_settings_works(service_settings: Settings) -> None:
    from fastapi.testclient import TestClient

    from textsuite.service import create_service

    settings = make_settings(
        database_url=service_settings.database_url,
        bootstrap_api_key="bootstrap-admin-key-for-first-access",
    )
    with TestClient(create_service(settings)) as client:
        headers = {"X-API-Key": "bootstrap-admin-key-for-first-access"}
        assert client.get("/v1/jobs", headers=headers).status_code == 200


def test_the_dashboard_session_is_not_the_key_and_reaches_the_sentiment_api_only(
    client, api_key, service_settings: Settings
) -> None:
    """Signed in with an admin key, the browser holds a session signed for it, not the key;
    it reaches what the dashboard reads and nothing an admin key otherwise could."""
    admin = api_key("admin")
    signed_in = client.post("/dashboard/session", json={"key": admin})
    assert signed_in.status_code == 204, signed_in.text
    token = client.cookies.get("textsuite_session")
    assert token and admin not in signed_in.headers["set-cookie"]
    assert client.get("/v1/sentiment/alerts").status_code == 200  # the cookie alone
    as_key = client.get("/v1/sentiment/alerts", headers={"X-API-Key": token})  # header first
    assert as_key.status_code == 401  # a session is no key, cached or not
    refused = client.post("/v1/jobs", json={"kind": "core.worker_info"})
    assert refused.status_code == 403 and "lacks the 'admin' scope" in refused.text
    key_id, expires, signature = token.split(".")
    client.cookies.clear()
    client.cookies.set("textsuite_session", f"{key_id}.{int(expires) + 3600}.{signature}")
    assert client.get("/v1/sentiment/alerts").status_code == 401  # a longer life: forged


def test_a_session_ends_at_its_expiry_and_with_its_key(api_key, service_settings: Settings) -> None:
    from core.security import revoke_api_key, session_key, session_token
    from core.storage.engine import get_session_factory, session_scope
    from core.storage.models import ApiKey

    api_key("sentiment")
    with session_scope(get_session_factory(service_settings.database_url)) as session:
        record = session.scalars(select(ApiKey)).one()
        token = session_token(record, 60, now=1_000_000.0)
        assert session_key(session, token, now=1_000_059.0) is record
        assert session_key(session, token, now=1_000_060.0) is None  # expired
        assert session_key(session, "not.a.token") is None
        revoke_api_key(session, record.id)
        assert session_key(session, token, now=1_000_000.0) is None  # the key revoked
