"""The generic helpdesk webhook: signed message in, 202 with the reply, signed callback out."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from core.settings import Settings
from core.signing import SignatureError, sign, verify
from core.storage.engine import get_session_factory
from core.storage.models import Job, JobStatus
from tests.apps.support.fake_bot import ORDER_ANSWER, FakeBot, support_clients
from tests.apps.support.fake_chatwoot import ServerThread
from tests.workers.conftest import wait_for_job

WEBHOOK_SECRET = "wh-secret-5c1e9b7a20"
CALLBACK_SECRET = "cb-secret-0d4f8e6b31"
WEBHOOK = "/v1/support/webhooks/messages"
TOLERANCE_S = 300


@dataclass(frozen=True)
class Callback:
    headers: dict[str, str]
    body: bytes
    status_code: int


class CallbackReceiver:
    """A helpdesk's callback endpoint: records each POST, fails the next N on demand."""

    def __init__(self) -> None:
        self.callbacks: list[Callback] = []
        self.failures: list[int] = []
        self._lock = threading.Lock()
        app = FastAPI()

        @app.post("/hooks/textsuite")
        async def receive(request: Request) -> JSONResponse:
            body = await request.body()
            with self._lock:
                status_code = self.failures.pop(0) if self.failures else 200
                headers = {k.lower(): v for k, v in request.headers.items()}
                self.callbacks.append(Callback(headers, body, status_code))
            return JSONResponse({"ok": status_code == 200}, status_code=status_code)

        self.server = ServerThread(app)

    @property
    def url(self) -> str:
        return f"{self.server.url}/hooks/textsuite?tenant=shop"

    def received(self) -> list[Callback]:
        with self._lock:
            return [c for c in self.callbacks if c.status_code == 200]


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    receiver = CallbackReceiver()
    receiver.server.start()
    yield receiver
    receiver.server.stop()


@pytest.fixture
def bot() -> FakeBot:
    return FakeBot()


@pytest.fixture
def make_client(
    service_settings: Settings, receiver: CallbackReceiver, bot: FakeBot, monkeypatch
) -> Iterator[Any]:
    with support_clients(
        service_settings,
        bot,
        monkeypatch,
        webhook_secret=WEBHOOK_SECRET,
        callback_url=receiver.url,
        callback_secret=CALLBACK_SECRET,
        signature_tolerance_s=TOLERANCE_S,
    ) as make:
        yield make


@pytest.fixture
def client(make_client) -> TestClient:
    return make_client()


@pytest.fixture
def jobs(service_settings: Settings):
    return get_session_factory(service_settings.database_url)


def message(text: str = "Where is my order 1042?", **fields: Any) -> dict[str, Any]:
    return {
        "conversation_id": "conv-9",
        "message_id": "msg-1",
        "text": text,
        "customer_id": "cust-881",
        "customer_name": "Dana Reyes",
        "metadata": {"order_id": "1042"},
        **fields,
    }


def post(
    client: TestClient,
    payload: Any,
    *,
    secret: str = WEBHOOK_SECRET,
    timestamp: int | None = None,
    headers: dict[str, str] | None = None,
):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    ts = int(time.time()) if timestamp is None else timestamp
    signed = {
        "Content-Type": "application/json",
        "X-Textsuite-Timestamp": str(ts),
        "X-Textsuite-Signature": sign(secret, ts, body),
    }
    return client.post(WEBHOOK, content=body, headers={**signed, **(headers or {})})


def job_count(factory) -> int:
    with factory() as session:
        return session.scalar(select(func.count()).select_from(Job))


def all_logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(f"{r.getMessage()} {r.__dict__!r}" for r in caplog.records)


def test_a_signed_message_is_answered_and_a_signed_callback_follows(
    client: TestClient, receiver: CallbackReceiver, bot: FakeBot, jobs
) -> None:
    response = post(client, message())

    assert response.status_code == 202, response.text
    reply = response.json()
    assert reply["answer"] == ORDER_ANSWER and reply["handoff"] is False
    assert reply["intent"] == "order_status" and reply["confidence"] == 0.93
    assert reply["handoff_reason"] is None and reply["duplicate"] is False
    assert reply["alternatives"][0] == {"intent": "order_status", "confidence": 0.93}
    assert len(reply["alternatives"]) == 3
    [seen] = bot.seen
    assert (seen.channel, seen.conversation_id, seen.message_id) == ("webhook", "conv-9", "msg-1")
    assert (seen.customer_id, seen.metadata) == ("cust-881", {"order_id": "1042"})

    job = wait_for_job(jobs, reply["callback_job_id"])
    assert job.status is JobStatus.SUCCEEDED, job.error
    assert job.kind == "support.webhook_callback" and job.result == {"status_code": 200}
    [callback] = receiver.callbacks
    verify(
        CALLBACK_SECRET,
        callback.headers["x-textsuite-timestamp"],
        callback.body,
        callback.headers["x-textsuite-signature"],
        TOLERANCE_S,
    )
    with pytest.raises(SignatureError):  # signed with the callback secret, not the inbound one
        verify(
            WEBHOOK_SECRET,
            callback.headers["x-textsuite-timestamp"],
            callback.body,
            callback.headers["x-textsuite-signature"],
            TOLERANCE_S,
        )
    assert callback.headers["x-textsuite-delivery"] == str(job.id)
    assert callback.headers["content-type"] == "application/json"
    sent = json.loads(callback.body)
    expected = {k: v for k, v in reply.items() if k not in ("duplicate", "callback_job_id")}
    assert sent == expected
    assert sent["conversation_id"] == "conv-9" and sent["message_id"] == "msg-1"


def test_a_delivered_reply_keeps_no_personal_data_in_its_job(
    client: TestClient, receiver: CallbackReceiver, jobs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answer may carry a slot from the customer's record (an email): the customer gets
    it; the job that delivered it keeps it masked."""
    import tests.apps.support.fake_bot as fake_bot

    monkeypatch.setattr(fake_bot, "ORDER_ANSWER", "Tracking news goes to maya.l@example.com.")
    response = post(client, message())
    job = wait_for_job(jobs, response.json()["callback_job_id"])
    [callback] = receiver.received()
    assert json.loads(callback.body)["answer"] == "Tracking news goes to maya.l@example.com."
    assert job.status is JobStatus.SUCCEEDED
    with jobs() as session:
        stored = session.get(Job, job.id).params
    assert stored["answer"] == "Tracking news goes to [EMAIL]."


def test_a_handoff_is_reported_with_its_reason(
    client: TestClient, receiver: CallbackReceiver, jobs
) -> None:
    response = post(client, message("this is broken and I am upset"))

    assert response.status_code == 202, response.text
    reply = response.json()
    assert reply["handoff"] is True and reply["answer"] is None
    assert reply["handoff_reason"] == "low_confidence"
    wait_for_job(jobs, reply["callback_job_id"])
    [callback] = receiver.received()
    assert json.loads(callback.body)["handoff_reason"] == "low_confidence"


def test_callbacks_are_signed_with_the_webhook_secret_without_a_callback_secret(
    make_client, receiver: CallbackReceiver, jobs
) -> None:
    client = make_client(callback_secret=None)
    response = post(client, message())

    wait_for_job(jobs, response.json()["callback_job_id"])
    [callback] = receiver.received()
    verify(
        WEBHOOK_SECRET,
        callback.headers["x-textsuite-timestamp"],
        callback.body,
        callback.headers["x-textsuite-signature"],
        TOLERANCE_S,
    )


@pytest.mark.parametrize(
    ("signing", "detail"),
    [
        ({"secret": "not-the-secret"}, "does not match"),
        ({"skew_s": -TOLERANCE_S - 60}, "s old"),  # timestamps taken when the test runs
        ({"skew_s": TOLERANCE_S + 60}, "in the future"),
        ({"headers": {"X-Textsuite-Signature": ""}}, "missing signature"),
        ({"headers": {"X-Textsuite-Timestamp": ""}}, "missing timestamp"),
    ],
    ids=["wrong-secret", "replay", "future", "no-signature", "no-timestamp"],
)
def test_bad_or_replayed_signatures_are_refused(
    client: TestClient,
    receiver: CallbackReceiver,
    bot: FakeBot,
    jobs,
    caplog: pytest.LogCaptureFixture,
    signing,
    detail,
) -> None:
    signing = dict(signing)
    if "skew_s" in signing:
        signing["timestamp"] = int(time.time()) + signing.pop("skew_s")
    with caplog.at_level(logging.DEBUG):
        response = post(client, message(), **signing)

    assert response.status_code == 401
    assert detail in response.json()["detail"]
    assert bot.seen == [] and job_count(jobs) == 0 and receiver.callbacks == []
    logged = all_logged(caplog)
    assert "rejected helpdesk webhook" in logged
    assert WEBHOOK_SECRET not in logged and CALLBACK_SECRET not in logged


def test_a_captured_request_replayed_later_is_refused(client: TestClient, bot: FakeBot) -> None:
    """The same bytes and headers, once fine, fail when they arrive outside the tolerance."""
    old = int(time.time()) - TOLERANCE_S - 1
    body = json.dumps(message()).encode()
    headers = {
        "X-Textsuite-Timestamp": str(old),
        "X-Textsuite-Signature": sign(WEBHOOK_SECRET, old, body),
    }
    verify(WEBHOOK_SECRET, old, body, headers["X-Textsuite-Signature"], TOLERANCE_S, now=old + 5)

    response = client.post(WEBHOOK, content=body, headers=headers)

    assert response.status_code == 401 and "old" in response.json()["detail"]
    assert bot.seen == []


def test_without_a_webhook_secret_the_endpoint_is_off(make_client, bot: FakeBot) -> None:
    client = make_client(webhook_secret=None)
    response = post(client, message())

    assert response.status_code == 404
    assert "TEXTSUITE_SUPPORT_WEBHOOK_SECRET" in response.json()["detail"]
    assert bot.seen == []


def test_without_a_callback_url_the_reply_is_only_in_the_response(
    make_client, receiver: CallbackReceiver, jobs
) -> None:
    client = make_client(callback_url=None)
    response = post(client, message())

    assert response.status_code == 202, response.text
    assert response.json()["callback_job_id"] is None
    assert response.json()["answer"] == ORDER_ANSWER
    assert job_count(jobs) == 0 and receiver.callbacks == []


def test_a_redelivered_message_gets_one_callback(
    client: TestClient, receiver: CallbackReceiver, bot: FakeBot, jobs
) -> None:
    first = post(client, message())
    wait_for_job(jobs, first.json()["callback_job_id"])
    again = post(client, message())

    assert again.status_code == 202
    assert again.json()["duplicate"] is True
    assert again.json()["callback_job_id"] == first.json()["callback_job_id"]
    assert again.json()["answer"] == first.json()["answer"]
    assert len(bot.seen) == 2 and job_count(jobs) == 1
    assert len(receiver.callbacks) == 1


def test_an_unavailable_receiver_gets_the_callback_on_a_retry(
    client: TestClient, receiver: CallbackReceiver, jobs
) -> None:
    receiver.failures = [503, 429]
    response = post(client, message())

    job = wait_for_job(jobs, response.json()["callback_job_id"])
    assert job.status is JobStatus.SUCCEEDED, job.error
    assert job.attempts == 3
    assert [c.status_code for c in receiver.callbacks] == [503, 429, 200]
    assert len({c.headers["x-textsuite-delivery"] for c in receiver.callbacks}) == 1
    for callback in receiver.callbacks:  # each attempt is signed afresh
        verify(
            CALLBACK_SECRET,
            callback.headers["x-textsuite-timestamp"],
            callback.body,
            callback.headers["x-textsuite-signature"],
            TOLERANCE_S,
        )


def test_a_refusing_receiver_fails_the_job_with_the_reason(
    client: TestClient, receiver: CallbackReceiver, jobs, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.failures = [400]
    with caplog.at_level(logging.DEBUG):
        response = post(client, message())
        job = wait_for_job(jobs, response.json()["callback_job_id"])

    assert job.status is JobStatus.FAILED and job.attempts == 1
    assert "the helpdesk callback answered 400 to POST" in job.error
    assert "/hooks/…" in job.error and "textsuite" not in job.error  # a path may be a token
    assert "tenant=shop" not in job.error  # query strings may carry credentials
    logged = job.error + all_logged(caplog)
    assert WEBHOOK_SECRET not in logged and CALLBACK_SECRET not in logged


@pytest.mark.parametrize(
    ("payload", "status_code", "detail"),
    [
        (b"not json", 422, "not valid JSON"),
        (b'"a string"', 422, "must be a JSON object"),
        ({"conversation_id": "c", "message_id": "m"}, 422, "text"),
        (message(text="   "), 422, "text"),
        (message(conversation_id=""), 422, "conversation_id"),
        (message(metadata=[1, 2]), 422, "metadata"),
        (message(metadata={"order_id": {"id": "TH-1"}}), 422, "'order_id' is an object"),
        (message(text="x" * 2001), 422, "2000"),
        (b'{"conversation_id": "c", "text": "hi \\ud800"}', 422, "text"),
        (b'{"conversation_id": "c", "text": "hi", "metadata": {"n": NaN}}', 422, "NaN"),
        (b'{"conversation_id": "c", "text": "hi", "metadata": {"n": 1e309}}', 422, "range"),
        (b'{"conversation_id": "c", "text": "hi", "metadata": {"n": "\\udc00"}}', 422, "surrogate"),
        (b"[" * 100_000 + b"]" * 100_000, 422, "nested deeper"),
    ],
    ids=[
        "broken",
        "string",
        "no-text",
        "blank-text",
        "blank-conversation",
        "bad-metadata",
        "nested-metadata",
        "text-too-long",
        "lone-surrogate",
        "nan-metadata",
        "infinite-metadata",
        "surrogate-metadata",
        "deep",
    ],
)
def test_malformed_messages_get_a_clear_4xx(
    client: TestClient, bot: FakeBot, payload, status_code, detail
) -> None:
    response = post(client, payload)

    assert response.status_code == status_code, response.text
    assert detail in json.dumps(response.json()["detail"])
    assert bot.seen == []


def test_numeric_ids_are_accepted_as_strings(client: TestClient, bot: FakeBot) -> None:
    response = post(client, message(conversation_id=77, message_id=1001))

    assert response.status_code == 202, response.text
    assert response.json()["conversation_id"] == "77" and response.json()["message_id"] == "1001"
    assert bot.seen[0].message_id == "1001"
