"""Alerts, rules and notifications over the HTTP API, end to end on embedded defaults:
articles scored in-process, an alert fires, a local webhook receiver gets the notification."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from sqlalchemy import select

from apps.sentiment.notify import NOTIFY_JOB
from apps.sentiment.settings import get_sentiment_settings
from core.security import create_api_key
from core.settings import Settings
from core.signing import verify
from core.storage.engine import get_session_factory, session_scope
from core.storage.models import Job, JobStatus
from tests.apps.sentiment.conftest import BURST
from tests.apps.support.fake_chatwoot import ServerThread
from tests.workers.conftest import wait_for_job
from textsuite.service import create_service

SECRET = "a-webhook-secret-of-some-length"
SHARE_RULE = {"name": "share", "kind": "negative_share", "window_s": 3600, "threshold": 0.6}


class Receiver:
    """A chat tool's incoming webhook: records posts; fails the first `failures` of them."""

    def __init__(self, failures: int = 0, hangs: int = 0, hang_s: float = 3.0) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.failures, self.hangs = failures, hangs
        self.lock = threading.Lock()
        app = FastAPI()

        @app.post("/hooks/alerts")
        async def hook(request: Request) -> JSONResponse:
            body = await request.body()
            with self.lock:
                hang = self.hangs > 0
                self.hangs -= hang
            if hang:  # overloaded: answers late, and then unprocessed, as behind a proxy
                await asyncio.sleep(hang_s)
                return JSONResponse({"error": "gateway timeout"}, status_code=504)
            with self.lock:
                if self.failures > 0:
                    self.failures -= 1
                    return JSONResponse({"error": "busy"}, status_code=503)
                self.posts.append((dict(request.headers), body))
            return JSONResponse({"ok": True})

        self.server = ServerThread(app)

    def wait_for(self, n: int, timeout_s: float = 30.0) -> list[tuple[dict[str, str], bytes]]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.posts) >= n:
                    return list(self.posts)
            time.sleep(0.05)
        raise AssertionError(f"{len(self.posts)} notification(s) received, expected {n}")


@pytest.fixture
def api(sentiment_settings: Settings) -> Iterator[tuple[TestClient, dict[str, str]]]:
    with session_scope(get_session_factory(sentiment_settings.database_url)) as session:
        key = create_api_key(session, "analyst", ["sentiment"])[1]
    with TestClient(create_service(sentiment_settings)) as client:
        yield client, {"X-API-Key": key}


def post_burst(client: TestClient, key: dict[str, str]) -> list[dict[str, Any]]:
    response = client.post(
        "/v1/sentiment/articles", json={"articles": [{"title": t} for t in BURST]}, headers=key
    )
    assert response.status_code == 200, response.text
    return response.json()["articles"]


def test_an_alert_with_its_articles_and_acknowledgement(api) -> None:
    client, key = api
    fired = "textsuite_sentiment_alert_changes_total"
    before = REGISTRY.get_sample_value(fired, {"state": "firing"}) or 0.0
    assert client.post("/v1/sentiment/rules", json=SHARE_RULE, headers=key).status_code == 201
    articles = post_burst(client, key)
    [alert] = client.get("/v1/sentiment/alerts", params={"state": "open"}, headers=key).json()
    assert REGISTRY.get_sample_value(fired, {"state": "firing"}) == before + 1
    assert alert["state"] == "firing" and alert["ticker"] == "HLVP" and alert["rule"] == "share"
    assert alert["details"]["volume"] == 6 and alert["value"] == 1.0
    detail = client.get(f"/v1/sentiment/alerts/{alert['id']}", headers=key).json()
    assert {a["id"] for a in detail["articles"]} == {a["id"] for a in articles}

    acked = client.post(f"/v1/sentiment/alerts/{alert['id']}/ack", headers=key).json()
    assert acked["acknowledged_by"] == "analyst" and acked["acknowledged_at"]
    again = client.post(f"/v1/sentiment/alerts/{alert['id']}/ack", headers=key).json()
    assert again["acknowledged_at"] == acked["acknowledged_at"]  # the first one stands
    assert (
        client.get("/v1/sentiment/alerts", params={"unacknowledged": True}, headers=key).json()
        == []
    )
    assert (
        len(client.get("/v1/sentiment/alerts", params={"ticker": "HLVP"}, headers=key).json()) == 1
    )
    assert client.get("/v1/sentiment/alerts", params={"ticker": "NWRB"}, headers=key).json() == []
    unknown = client.get("/v1/sentiment/alerts", params={"ticker": "NOPE"}, headers=key)
    assert unknown.status_code == 404 and "NOPE is not on the watchlist" in unknown.text

    post_burst(client, key)  # the same articles again: duplicates, no second alert
    assert len(client.get("/v1/sentiment/alerts", headers=key).json()) == 1
    assert client.get("/v1/sentiment/alerts", params={"offset": 1}, headers=key).json() == []

    assert (
        client.get("/v1/sentiment/alerts", params={"state": "loud"}, headers=key).status_code == 422
    )
    missing = client.get("/v1/sentiment/alerts/00000000-0000-0000-0000-000000000000", headers=key)
    assert missing.status_code == 404

    series = client.get(
        "/v1/sentiment/entities/HLVP/series", params={"bucket_s": 3600}, headers=key
    )
    assert series.status_code == 200
    buckets = series.json()["buckets"]
    assert sum(b["volume"] for b in buckets) == 6 and sum(b["negative"] for b in buckets) == 6
    assert len(buckets) >= 168  # a week of hours by default

    # Its alerts are the record: removing the company needs purge=true.
    kept = client.delete("/v1/sentiment/entities/HLVP", headers=key)
    assert kept.status_code == 409 and "purge=true" in kept.json()["detail"]
    assert client.get(f"/v1/sentiment/alerts/{alert['id']}", headers=key).status_code == 200
    purged = client.delete("/v1/sentiment/entities/HLVP?purge=true", headers=key)
    assert purged.status_code == 204
    assert client.get(f"/v1/sentiment/alerts/{alert['id']}", headers=key).status_code == 404


def test_a_rule_stopped_resolves_its_alerts_and_keeps_them(api) -> None:
    """Nothing judges an alert of a disabled rule again: it resolves at once, not firing
    forever; and its alerts are the record, as a company's are."""
    client, key = api
    rule_id = client.post("/v1/sentiment/rules", json=SHARE_RULE, headers=key).json()["id"]
    post_burst(client, key)
    [alert] = client.get("/v1/sentiment/alerts", params={"state": "open"}, headers=key).json()
    stopped = {**SHARE_RULE, "enabled": False}
    changed = client.put(f"/v1/sentiment/rules/{rule_id}", json=stopped, headers=key)
    assert changed.status_code == 200, changed.text
    shown = client.get(f"/v1/sentiment/alerts/{alert['id']}", headers=key).json()
    assert shown["state"] == "resolved" and shown["resolved_at"], shown

    client.put(f"/v1/sentiment/rules/{rule_id}", json=SHARE_RULE, headers=key)
    post_burst(client, key)  # the same articles: duplicates, nothing new
    assert client.get("/v1/sentiment/alerts", params={"state": "open"}, headers=key).json() == []
    kept = client.delete(f"/v1/sentiment/rules/{rule_id}", headers=key)
    assert kept.status_code == 409 and "enabled: false" in kept.json()["detail"]
    purged = client.delete(f"/v1/sentiment/rules/{rule_id}?purge=true", headers=key)
    assert purged.status_code == 204
    assert client.get(f"/v1/sentiment/alerts/{alert['id']}", headers=key).status_code == 404


def test_rules_are_validated_and_managed(api) -> None:
    client, key = api
    bad = [
        ({**SHARE_RULE, "threshold": 1.5}, "makes no sense for negative_share"),
        ({**SHARE_RULE, "kind": "z_score", "threshold": 3}, "below 0 for z_score"),
        ({**SHARE_RULE, "kind": "volume_spike", "threshold": 0.5}, "above 1 for volume_spike"),
        ({**SHARE_RULE, "window_s": 10}, "greater than or equal to 60"),
        ({**SHARE_RULE, "kind": "vibes"}, "kind"),
        ({**SHARE_RULE, "name": "has spaces"}, "name"),
        ({**SHARE_RULE, "colour": "red"}, "colour"),
    ]
    for body, message in bad:
        response = client.post("/v1/sentiment/rules", json=body, headers=key)
        assert response.status_code == 422 and message in response.text, (body, response.text)
    unknown = client.post("/v1/sentiment/rules", json={**SHARE_RULE, "ticker": "ZZZ"}, headers=key)
    assert unknown.status_code == 404

    created = client.post("/v1/sentiment/rules", json=SHARE_RULE, headers=key)
    assert created.status_code == 201 and created.json()["ticker"] is None
    clash = client.post("/v1/sentiment/rules", json=SHARE_RULE, headers=key)
    assert clash.status_code == 409 and "already exists" in clash.text
    own = client.post("/v1/sentiment/rules", json={**SHARE_RULE, "ticker": "hlvp"}, headers=key)
    assert own.status_code == 201 and own.json()["ticker"] == "HLVP"
    other = client.post("/v1/sentiment/rules", json={**SHARE_RULE, "name": "other"}, headers=key)
    for renamed in (SHARE_RULE, {**SHARE_RULE, "enabled": False}):  # a taken name, disabled too
        taken = client.put(f"/v1/sentiment/rules/{other.json()['id']}", json=renamed, headers=key)
        assert taken.status_code == 409 and "already exists" in taken.text, taken.text
    assert client.delete(f"/v1/sentiment/rules/{other.json()['id']}", headers=key).is_success

    rule_id = created.json()["id"]
    changed = client.put(
        f"/v1/sentiment/rules/{rule_id}", json={**SHARE_RULE, "threshold": 0.8}, headers=key
    )
    assert changed.status_code == 200 and changed.json()["threshold"] == 0.8
    defaults = client.post("/v1/sentiment/rules/defaults", headers=key).json()
    assert {r["name"] for r in defaults} >= {"sharp-drop-1h", "negative-share-1h"}
    assert client.post("/v1/sentiment/rules/defaults", headers=key).json() == []
    assert client.delete(f"/v1/sentiment/rules/{rule_id}", headers=key).status_code == 204
    assert client.delete(f"/v1/sentiment/rules/{rule_id}", headers=key).status_code == 404
    names = [r["name"] for r in client.get("/v1/sentiment/rules", headers=key).json()]
    assert "share" in names and len(names) == 1 + len(defaults)


def test_fired_alerts_are_delivered_signed_and_retried(api) -> None:
    client, key = api
    receiver = Receiver(failures=2)  # the chat tool is busy at first
    receiver.server.start()
    try:
        hook = {"url": f"{receiver.server.url}/hooks/alerts", "secret": SECRET}
        created = client.post("/v1/sentiment/webhooks", json=hook, headers=key)
        assert created.status_code == 201 and created.json()["signed"] is True
        assert "secret" not in created.json()
        assert client.post("/v1/sentiment/webhooks", json=hook, headers=key).status_code == 409
        bad = client.post("/v1/sentiment/webhooks", json={"url": "nope"}, headers=key)
        assert bad.status_code == 422
        client.post("/v1/sentiment/rules", json=SHARE_RULE, headers=key)
        post_burst(client, key)
        [(headers, body)] = receiver.wait_for(1)
    finally:
        receiver.server.stop()
    verify(SECRET, headers["x-textsuite-timestamp"], body, headers["x-textsuite-signature"], 60)
    message = json.loads(body)
    assert message["text"].startswith("Alert: Halvorsen Pharma (HLVP), rule share")
    assert message["blocks"][0]["type"] == "section"
    assert message["alert"]["state"] == "firing" and message["alert"]["details"]["volume"] == 6
    assert receiver.failures == 0  # the two 503s were retried, then delivered once


@pytest.fixture
def quick_giving_up(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TEXTSUITE_SENTIMENT_NOTIFY_TIMEOUT_S", "0.5")
    get_sentiment_settings.cache_clear()
    yield
    get_sentiment_settings.cache_clear()


def notify_job(settings: Settings, until: Any = None) -> Job:
    factory = get_session_factory(settings.database_url)
    with factory() as session:
        job_id = session.scalars(select(Job.id).where(Job.kind == NOTIFY_JOB)).one()
    return wait_for_job(factory, job_id, timeout_s=30, until=until)


def test_a_hanging_alert_target_holds_up_nothing_and_gets_the_alert_once(
    quick_giving_up: None, api, sentiment_settings: Settings
) -> None:
    client, key = api
    receiver = Receiver(hangs=1, hang_s=3.0)
    receiver.server.start()
    try:
        hook = {"url": f"{receiver.server.url}/hooks/alerts"}
        assert client.post("/v1/sentiment/webhooks", json=hook, headers=key).status_code == 201
        client.post("/v1/sentiment/rules", json=SHARE_RULE, headers=key)
        started = time.monotonic()
        post_burst(client, key)
        assert time.monotonic() - started < 3.0  # scored and answered without the target
        job = notify_job(sentiment_settings)
        receiver.wait_for(1)
    finally:
        receiver.server.stop()
    assert job.status is JobStatus.SUCCEEDED, job.error
    assert job.attempts == 2  # gave up on the hanging call after 0.5 s, then delivered
    assert len(receiver.posts) == 1


def test_an_unreachable_alert_target_is_retried_with_the_reason_recorded(
    api, sentiment_settings: Settings
) -> None:
    client, key = api
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # A Slack incoming webhook's token is its path's end; others put one in the query.
    url = f"http://127.0.0.1:{port}/services/T01/B02/s3cr3t-in-path?token=s3cr3t-in-url"
    hook = {"url": url, "secret": SECRET}
    assert client.post("/v1/sentiment/webhooks", json=hook, headers=key).status_code == 201
    client.post("/v1/sentiment/rules", json=SHARE_RULE, headers=key)
    post_burst(client, key)
    job = notify_job(
        sentiment_settings,
        until=lambda job: job.attempts >= 2 and job.status is JobStatus.RETRYING,
    )
    assert job.status is JobStatus.RETRYING  # backing off, not given up, not lost
    assert f"cannot reach the alert webhook at POST http://127.0.0.1:{port}/services/…" in (
        job.error or ""
    )
    assert "s3cr3t" not in job.error and "B02" not in job.error and SECRET not in job.error
    alerts = client.get("/v1/sentiment/alerts", headers=key).json()
    assert [alert["state"] for alert in alerts] == ["firing"]
