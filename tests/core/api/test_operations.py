"""Health, readiness, metrics, docs and request limits."""

from __future__ import annotations

from fastapi.testclient import TestClient

import migrations
from core.settings import Settings
from tests.conftest import make_settings
from textsuite.service import create_service


def test_healthz(client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_checks_database_and_migrations(client) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    # Embedded mode has no broker to check: jobs run in this process. Each app checks that
    # its production model's files are here; with none trained yet the process is ready, and
    # says what that means for each app, and where posted articles are scored.
    checks = response.json()["checks"]
    assert checks.keys() == {
        "database",
        "migrations",
        "support_model",
        "sentiment_model",
        "sentiment_stream",
        "recommend_model",
    }
    assert checks["database"] == checks["migrations"] == "ok"
    assert checks["support_model"].startswith("ok: none trained yet: every message is handed")
    assert checks["sentiment_model"].startswith("ok: none trained yet: articles are refused")
    assert (
        checks["recommend_model"] == "ok: none tuned yet: items are embedded with the base encoder"
    )
    assert checks["sentiment_stream"].startswith("ok: none configured: posted articles are scored")


def test_readyz_says_articles_wait_on_a_stream_until_a_model_is_trained(
    service_settings: Settings, redis_url: str
) -> None:
    from apps.sentiment.settings import load_sentiment_settings

    sentiment = load_sentiment_settings(_env_file=None, stream_url=redis_url)
    with TestClient(create_service(service_settings, sentiment=sentiment)) as client:
        checks = client.get("/readyz").json()["checks"]
    assert checks["sentiment_model"].startswith(
        "ok: none trained yet: articles wait on the stream, scored once one is"
    ), checks


def test_readyz_is_503_on_an_unmigrated_database(tmp_path) -> None:
    settings = make_settings(database_url=f"sqlite:///{tmp_path / 'empty.db'}")
    with TestClient(create_service(settings)) as client:
        response = client.get("/readyz")
        served = client.get("/v1/jobs", headers={"X-API-Key": "ts_some-key-of-sufficient-length"})
    # Not "unreachable, retry later": what to do.
    assert served.status_code == 503 and "run `textsuite migrate`" in served.json()["detail"]
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert "run `textsuite migrate`" in checks["migrations"]
    # A model table missing: the driver's message in a line, not the statement and a link.
    assert checks["support_model"] == "OperationalError: no such table: model_versions"


def test_readyz_is_503_when_the_broker_is_unreachable(sqlite_url: str) -> None:
    settings = make_settings(database_url=sqlite_url, broker_url="redis://127.0.0.1:1/0")
    with TestClient(create_service(settings)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"] != "ok"


def test_metrics_expose_request_latency(client) -> None:
    client.get("/healthz")
    text = client.get("/metrics").text
    assert 'textsuite_http_request_duration_seconds_count{method="GET",route="/healthz"' in text
    assert "textsuite_job_duration_seconds" in text


def test_openapi_docs(client) -> None:
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"/healthz", "/readyz", "/metrics", "/v1/jobs", "/v1/jobs/{job_id}"} <= set(
        schema["paths"]
    )


def test_oversized_body_is_413(service_settings: Settings, api_key) -> None:
    settings = make_settings(database_url=service_settings.database_url, max_request_bytes=1000)
    with TestClient(create_service(settings)) as client:
        response = client.post(
            "/v1/jobs",
            json={"kind": "core.worker_info", "params": {"blob": "x" * 5000}},
            headers={"X-API-Key": api_key("admin")},
        )
    assert response.status_code == 413
    assert "larger than the limit of 1000 bytes" in response.json()["detail"]


def test_file_imports_have_their_own_larger_limit(service_settings: Settings, api_key) -> None:
    settings = make_settings(
        database_url=service_settings.database_url, max_request_bytes=1000, max_import_bytes=20_000
    )
    lines = [f'{{"external_id": "sku-{n}", "title": "Tent number {n}"}}\n' for n in range(600)]
    file, whole = "".join(lines[:150]).encode(), "".join(lines).encode()  # 7 KB, 29 KB
    headers = {"X-API-Key": api_key("recommend"), "Content-Type": "application/x-ndjson"}
    with TestClient(create_service(settings)) as client:
        imported = client.post("/v1/recommend/items/import", content=file, headers=headers)
        too_big = client.post("/v1/recommend/items/import", content=whole, headers=headers)
        batch = client.post("/v1/recommend/items", content=file, headers=headers)
    assert imported.status_code == 200, imported.text
    assert imported.json()["created"] == 150
    assert too_big.status_code == 413 and "TEXTSUITE_MAX_IMPORT_BYTES" in too_big.text
    assert batch.status_code == 413 and "TEXTSUITE_MAX_REQUEST_BYTES" in batch.text


def test_malformed_job_requests_are_4xx_with_reasons(client, api_key) -> None:
    headers = {"X-API-Key": api_key("admin")}
    unknown = client.post("/v1/jobs", json={"kind": "core.nope"}, headers=headers)
    assert unknown.status_code == 422
    assert "known kinds:" in unknown.json()["detail"]
    as_json = {**headers, "Content-Type": "application/json"}
    assert client.post("/v1/jobs", content=b"{not json", headers=as_json).status_code == 422
    # No Content-Type: the body is not read as JSON at all, and the client is told to say so.
    assert client.post("/v1/jobs", content=b"{not json", headers=headers).status_code == 415
    extra = client.post("/v1/jobs", json={"kind": "core.worker_info", "x": 1}, headers=headers)
    assert extra.status_code == 422
    for kind, params in (("core.worker_info", {"ecko": 1}), ("recommend.embed", {"all": True})):
        unused = client.post("/v1/jobs", json={"kind": kind, "params": params}, headers=headers)
        assert unused.status_code == 422, unused.text
        assert f"invalid parameters for {kind}" in unused.json()["detail"]
        assert "Extra inputs are not permitted" in unused.json()["detail"]
    bad_queue = client.post(
        "/v1/jobs", json={"kind": "core.worker_info", "queue": "fast"}, headers=headers
    )
    assert bad_queue.status_code == 422 and "unknown queue 'fast'" in bad_queue.json()["detail"]
    assert client.get("/v1/jobs/not-a-uuid", headers=headers).status_code == 422
    missing = client.get("/v1/jobs/00000000-0000-0000-0000-000000000000", headers=headers)
    assert missing.status_code == 404


def test_migrations_module_reports_head() -> None:
    assert migrations.head_revision() is not None


def test_model_back_pressure_is_503_with_retry_after(service_settings: Settings) -> None:
    from fastapi import APIRouter

    from core.api import create_app
    from core.ml.batching import Overloaded
    from workers.dispatch import create_dispatcher

    router = APIRouter()

    @router.get("/busy")
    def busy() -> None:
        raise Overloaded("intents", pending=1024, max_queue=1024, retry_after_s=2.3)

    app = create_app(
        service_settings, dispatcher=create_dispatcher(service_settings), routers=[router]
    )
    with TestClient(app) as client:
        response = client.get("/busy")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "3"
    assert "overloaded: 1024 requests already queued" in response.json()["detail"]


def test_latency_is_labelled_with_the_whole_route(service_settings: Settings) -> None:
    """Each app's routes sit under its own prefix: their latencies must not merge (three
    apps' `/stats` were one series)."""
    client = TestClient(create_service(service_settings))  # not started: routing is enough
    for app in ("support", "sentiment", "recommend"):
        assert client.get(f"/v1/{app}/stats").status_code == 401  # matched, then refused
    text = client.get("/metrics").text
    for app in ("support", "sentiment", "recommend"):
        assert f'method="GET",route="/v1/{app}/stats",status="401"' in text
    assert 'route="/stats"' not in text
