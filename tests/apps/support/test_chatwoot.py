"""The Chatwoot agent bot end to end: webhook in, reply job, a real HTTP fake of Chatwoot out."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from apps.support.chatwoot import (
    ChatwootClient,
    ChatwootMessageCreated,
    handoff_note,
    to_incoming,
)
from apps.support.messages import Channel, IncomingMessage
from apps.support.settings import load_support_settings
from core.settings import Settings
from core.signing import sign
from core.storage.engine import get_session_factory
from core.storage.models import Job, JobStatus
from tests.apps.support.fake_bot import ORDER_ANSWER, FakeBot, support_clients
from tests.apps.support.fake_chatwoot import FakeChatwoot
from tests.workers.conftest import wait_for_job

TOKEN = "cw-token-3f9a1c7e5b"
SECRET = "cw-secret-81d2aa04c6"
WEBHOOK = "/v1/support/chatwoot/webhook"
ACCOUNT, CONVERSATION, INBOX = 7, 42, 3
MESSAGES_PATH = f"/api/v1/accounts/{ACCOUNT}/conversations/{CONVERSATION}/messages"
TOGGLE_PATH = f"/api/v1/accounts/{ACCOUNT}/conversations/{CONVERSATION}/toggle_status"


def chatwoot_payload(
    content: str | None = "Where is my order?",
    *,
    message_id: int = 501,
    event: str = "message_created",
    message_type: str | int = "incoming",
    private: bool = False,
    status: str | int = "pending",
) -> dict[str, Any]:
    """An agent-bot `message_created` webhook, shaped like Chatwoot sends it (extras included)."""
    contact = {
        "id": 88,
        "name": "Dana Reyes",
        "email": "dana@example.com",
        "phone_number": "+14155550100",
        "identifier": "cust-881",
        "thumbnail": "",
        "additional_attributes": {},
        "custom_attributes": {"plan": "pro"},
        "type": "contact",
    }
    return {
        "event": event,
        "id": message_id,
        "content": content,
        "content_type": "text",
        "content_attributes": {"in_reply_to": None},
        "message_type": message_type,
        "private": private,
        "source_id": None,
        "created_at": "2025-06-24T13:47:39.181Z",
        "additional_attributes": {},
        "sender": {**contact, "avatar": "", "account": {"id": ACCOUNT, "name": "Shop"}},
        "account": {"id": ACCOUNT, "name": "Shop"},
        "inbox": {"id": INBOX, "name": "Website"},
        "conversation": {
            "id": CONVERSATION,
            "inbox_id": INBOX,
            "status": status,
            "channel": "Channel::WebWidget",
            "can_reply": True,
            "unread_count": 1,
            "contact_inbox": {"id": 180, "contact_id": 88, "inbox_id": INBOX, "source_id": "s-1"},
            "messages": [{"id": message_id, "content": content, "message_type": 0}],
            "labels": [],
            "meta": {"sender": contact, "assignee": None, "team": None, "hmac_verified": False},
            "additional_attributes": {"browser_language": "en"},
            "custom_attributes": {},
            "agent_last_seen_at": 0,
            "timestamp": 1750772853,
            "created_at": 1750772853,
        },
    }


def signed(
    payload: Any, *, secret: str = SECRET, timestamp: int | None = None, delivery: str = "d-1"
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode() if not isinstance(payload, bytes) else payload
    ts = int(time.time()) if timestamp is None else timestamp
    return body, {
        "Content-Type": "application/json",
        "X-Chatwoot-Timestamp": str(ts),
        "X-Chatwoot-Signature": sign(secret, ts, body),
        "X-Chatwoot-Delivery": delivery,
    }


@pytest.fixture
def fake_chatwoot() -> Iterator[FakeChatwoot]:
    fake = FakeChatwoot(TOKEN).start()
    yield fake
    fake.stop()


@pytest.fixture
def bot() -> FakeBot:
    return FakeBot()


@pytest.fixture
def make_client(
    service_settings: Settings, fake_chatwoot: FakeChatwoot, bot: FakeBot, monkeypatch
) -> Iterator[Any]:
    """`make_client(**support_settings)`: the app with those settings (default: all set)."""
    with support_clients(
        service_settings,
        bot,
        monkeypatch,
        chatwoot_url=fake_chatwoot.url,
        chatwoot_api_token=TOKEN,
        chatwoot_webhook_secret=SECRET,
    ) as make:
        yield make


@pytest.fixture
def client(make_client) -> TestClient:
    return make_client()


@pytest.fixture
def jobs(service_settings: Settings):
    return get_session_factory(service_settings.database_url)


def post(client: TestClient, payload: Any, **signing: Any):
    body, headers = signed(payload, **signing)
    return client.post(WEBHOOK, content=body, headers=headers)


def job_count(factory) -> int:
    with factory() as session:
        return session.scalar(select(func.count()).select_from(Job))


def assert_no_secrets(text: str) -> None:
    for secret in (TOKEN, SECRET):
        assert secret not in text


def all_logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(f"{r.getMessage()} {r.__dict__!r}" for r in caplog.records)


# --- answering ------------------------------------------------------------------------------


def test_incoming_message_in_a_pending_conversation_gets_one_reply(
    client: TestClient, fake_chatwoot: FakeChatwoot, bot: FakeBot, jobs
) -> None:
    response = post(client, chatwoot_payload())

    assert response.status_code == 200, response.text
    outcome = response.json()
    assert outcome["action"] == "answer" and outcome["handoff"] is False
    assert outcome["chatwoot_message_id"] == "501" and outcome["delivery"] == "d-1"
    job = wait_for_job(jobs, outcome["job_id"])
    assert job.status is JobStatus.SUCCEEDED, job.error
    assert job.kind == "support.chatwoot_reply" and job.queue == "default"
    assert TOKEN not in json.dumps(job.params)

    [request] = fake_chatwoot.requests
    assert (request.method, request.path) == ("POST", MESSAGES_PATH)
    assert request.headers["api_access_token"] == TOKEN
    assert request.headers["content-type"] == "application/json"
    assert request.json == {"content": ORDER_ANSWER, "message_type": "outgoing", "private": False}
    assert job.result == {"action": "answer", "chatwoot_message_id": 9001}

    [seen] = bot.seen
    assert seen.channel is Channel.CHATWOOT
    assert (seen.conversation_id, seen.message_id, seen.text) == ("42", "501", "Where is my order?")
    assert (seen.customer_id, seen.customer_name) == ("cust-881", "Dana Reyes")
    assert seen.channel_data == {"account_id": ACCOUNT, "conversation_id": 42, "inbox_id": INBOX}


def test_handoff_posts_a_private_note_then_opens_the_conversation(
    client: TestClient, fake_chatwoot: FakeChatwoot, jobs
) -> None:
    response = post(client, chatwoot_payload("I want my money back, it broke"))

    assert response.status_code == 200, response.text
    assert response.json()["action"] == "handoff"
    job = wait_for_job(jobs, response.json()["job_id"])
    assert job.status is JobStatus.SUCCEEDED, job.error

    note, toggle = fake_chatwoot.requests
    assert note.path == MESSAGES_PATH and toggle.path == TOGGLE_PATH
    assert note.json["private"] is True and note.json["message_type"] == "outgoing"
    assert "low_confidence" in note.json["content"]
    assert "refund_request 41%, cancel_order 33%, payment_failed 12%" in note.json["content"]
    assert toggle.json == {"status": "open"}
    assert toggle.headers["api_access_token"] == TOKEN
    assert fake_chatwoot.statuses == {CONVERSATION: "open"}
    assert job.result == {
        "action": "handoff",
        "private_note_id": 9001,
        "conversation_status": "open",
    }


def test_numeric_enum_values_are_understood(client: TestClient, fake_chatwoot, jobs) -> None:
    """Some Chatwoot versions send message_type 0 (incoming) and status 2 (pending)."""
    response = post(client, chatwoot_payload(message_type=0, status=2))

    assert response.status_code == 200, response.text
    assert wait_for_job(jobs, response.json()["job_id"]).status is JobStatus.SUCCEEDED
    assert [r.path for r in fake_chatwoot.delivered()] == [MESSAGES_PATH]


def test_customer_falls_back_to_the_contact_id_never_the_email() -> None:
    payload = chatwoot_payload()
    assert to_incoming(ChatwootMessageCreated.model_validate(payload)).customer_id == "cust-881"
    payload["conversation"]["meta"]["sender"]["identifier"] = None
    assert payload["conversation"]["meta"]["sender"]["email"] == "dana@example.com"
    assert to_incoming(ChatwootMessageCreated.model_validate(payload)).customer_id == "88"


# --- what the bot leaves alone ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (chatwoot_payload(message_type="outgoing"), "not an incoming"),
        (chatwoot_payload(message_type=1), "not an incoming"),
        (chatwoot_payload(message_type="activity"), "not an incoming"),
        (chatwoot_payload(message_type="template"), "not an incoming"),
        (chatwoot_payload(private=True), "private"),
        (chatwoot_payload(status="open"), "'open', not 'pending'"),
        (chatwoot_payload(status="resolved"), "'resolved'"),
        (chatwoot_payload(status="snoozed"), "'snoozed'"),
        (chatwoot_payload(status=0), "'open'"),
        (chatwoot_payload(content=None), "no text"),
        ({**chatwoot_payload(), "event": "conversation_created"}, "'conversation_created'"),
        ({"event": "webwidget_triggered", "contact": {"id": 1}}, "'webwidget_triggered'"),
        ({"event": "conversation_status_changed", "id": 42}, "not handled"),
        ({"id": 3}, "None"),
    ],
    ids=[
        "outgoing",
        "outgoing-int",
        "activity",
        "template",
        "private-note",
        "open",
        "resolved",
        "snoozed",
        "open-int",
        "attachment-only",
        "conversation-created",
        "webwidget-triggered",
        "status-changed",
        "no-event",
    ],
)
def test_what_is_not_for_the_bot_is_ignored_and_nothing_is_sent(
    client: TestClient, fake_chatwoot: FakeChatwoot, bot: FakeBot, jobs, payload, reason
) -> None:
    response = post(client, payload)

    assert response.status_code == 200, response.text
    assert reason in response.json()["ignored"]
    assert bot.seen == []
    assert job_count(jobs) == 0
    assert fake_chatwoot.requests == []


# --- signatures -----------------------------------------------------------------------------


def _stale(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return signed(json.loads(body), timestamp=int(time.time()) - 3600)


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda b, h: (b, {k: v for k, v in h.items() if k != "X-Chatwoot-Signature"}), "missing"),
        (lambda b, h: (b, {k: v for k, v in h.items() if k != "X-Chatwoot-Timestamp"}), "missing"),
        (lambda b, h: signed(json.loads(b), secret="not-the-secret"), "does not match"),
        (lambda b, h: (b.replace(b"order", b"ORDER"), h), "does not match"),
        (lambda b, h: (b, {**h, "X-Chatwoot-Signature": "md5=abc"}), "must look like"),
        (lambda b, h: (b, {**h, "X-Chatwoot-Timestamp": "yesterday"}), "not unix seconds"),
        (_stale, "s old"),
    ],
    ids=[
        "no-signature",
        "no-timestamp",
        "wrong-secret",
        "tampered",
        "bad-scheme",
        "bad-ts",
        "stale",
    ],
)
def test_bad_signatures_are_refused_and_nothing_is_sent(
    client: TestClient,
    fake_chatwoot: FakeChatwoot,
    bot: FakeBot,
    jobs,
    caplog: pytest.LogCaptureFixture,
    tamper,
    message,
) -> None:
    body, headers = tamper(*signed(chatwoot_payload()))
    with caplog.at_level(logging.DEBUG):
        response = client.post(WEBHOOK, content=body, headers=headers)

    assert response.status_code == 401
    assert message in response.json()["detail"]
    assert bot.seen == [] and job_count(jobs) == 0 and fake_chatwoot.requests == []
    logged = all_logged(caplog)
    assert "rejected Chatwoot webhook" in logged
    assert_no_secrets(logged)
    if "X-Chatwoot-Signature" in headers:
        assert headers["X-Chatwoot-Signature"].partition("=")[2] not in logged


def test_unsigned_webhooks_are_accepted_only_when_allowed_without_a_secret(
    make_client, fake_chatwoot: FakeChatwoot, jobs
) -> None:
    client = make_client(chatwoot_webhook_secret=None, chatwoot_allow_unsigned=True)
    response = client.post(WEBHOOK, json=chatwoot_payload())

    assert response.status_code == 200, response.text
    assert wait_for_job(jobs, response.json()["job_id"]).status is JobStatus.SUCCEEDED
    assert len(fake_chatwoot.delivered()) == 1


# --- delivery: once, retried, or failed with the reason -------------------------------------


def test_a_redelivered_webhook_is_answered_once(
    client: TestClient, fake_chatwoot: FakeChatwoot, bot: FakeBot, jobs
) -> None:
    first = post(client, chatwoot_payload(), delivery="d-7")
    wait_for_job(jobs, first.json()["job_id"])
    again = post(client, chatwoot_payload(), delivery="d-7")
    other_delivery = post(client, chatwoot_payload(), delivery="d-8")

    assert first.status_code == again.status_code == other_delivery.status_code == 200
    assert first.json()["duplicate"] is False and first.json()["job_created"] is True
    for repeat in (again, other_delivery):
        assert repeat.json()["duplicate"] is True and repeat.json()["job_created"] is False
        assert repeat.json()["job_id"] == first.json()["job_id"]
        assert repeat.json()["message_id"] == first.json()["message_id"]
    assert len(bot.seen) == 3
    assert job_count(jobs) == 1
    assert len(fake_chatwoot.requests) == 1


def test_chatwoot_503_twice_then_the_reply_arrives_once(
    client: TestClient, fake_chatwoot: FakeChatwoot, jobs
) -> None:
    fake_chatwoot.fail_next(2, 503)
    response = post(client, chatwoot_payload())

    assert response.status_code == 200
    job = wait_for_job(jobs, response.json()["job_id"])
    assert job.status is JobStatus.SUCCEEDED, job.error
    assert job.attempts == 3
    assert [r.status_code for r in fake_chatwoot.requests] == [503, 503, 200]
    assert [r.json["content"] for r in fake_chatwoot.delivered()] == [ORDER_ANSWER]


def test_a_hanging_chatwoot_holds_up_nothing_and_gets_the_reply_once(
    make_client, fake_chatwoot: FakeChatwoot, jobs
) -> None:
    client = make_client(delivery_timeout_s=0.5)
    fake_chatwoot.hang_next(1, 3.0)
    started = time.perf_counter()
    response = post(client, chatwoot_payload())

    assert response.status_code == 200
    assert time.perf_counter() - started < 2.0  # the webhook answered; the job waits
    job = wait_for_job(jobs, response.json()["job_id"], timeout_s=60)
    assert job.status is JobStatus.SUCCEEDED, job.error
    assert job.attempts == 2  # gave up on the hanging call after 0.5 s, then delivered
    assert [r.json["content"] for r in fake_chatwoot.delivered()] == [ORDER_ANSWER]


def test_429_is_retried_too(client: TestClient, fake_chatwoot: FakeChatwoot, jobs) -> None:
    fake_chatwoot.fail_next(1, 429, {"error": "Too many requests"})
    response = post(client, chatwoot_payload())

    job = wait_for_job(jobs, response.json()["job_id"])
    assert job.status is JobStatus.SUCCEEDED and job.attempts == 2
    assert len(fake_chatwoot.delivered()) == 1


def test_a_retried_handoff_posts_its_note_once(
    client: TestClient, fake_chatwoot: FakeChatwoot, jobs
) -> None:
    fake_chatwoot.fail_next(1, 502, path_contains="toggle_status")
    response = post(client, chatwoot_payload("talk to a human please"))

    job = wait_for_job(jobs, response.json()["job_id"])
    assert job.status is JobStatus.SUCCEEDED, job.error
    assert job.attempts == 2
    assert [(r.path, r.status_code) for r in fake_chatwoot.requests] == [
        (MESSAGES_PATH, 200),
        (TOGGLE_PATH, 502),
        (TOGGLE_PATH, 200),
    ]
    assert job.result["private_note_id"] == 9001
    assert fake_chatwoot.statuses == {CONVERSATION: "open"}


def test_a_chatwoot_outage_delays_the_reply_but_does_not_lose_it(
    client: TestClient, fake_chatwoot: FakeChatwoot, jobs
) -> None:
    fake_chatwoot.stop()
    response = post(client, chatwoot_payload())
    assert response.status_code == 200

    retrying = wait_for_job(
        jobs, response.json()["job_id"], until=lambda job: job.status is JobStatus.RETRYING
    )
    assert "cannot reach Chatwoot" in retrying.error
    fake_chatwoot.start()
    job = wait_for_job(jobs, response.json()["job_id"])

    assert job.status is JobStatus.SUCCEEDED, job.error
    assert [r.json["content"] for r in fake_chatwoot.delivered()] == [ORDER_ANSWER]


@pytest.mark.parametrize(
    ("status_code", "body", "reason"),
    [
        (404, {"error": "Resource could not be found"}, "Resource could not be found"),
        (422, {"message": "Content can't be blank"}, "Content can't be blank"),
    ],
)
def test_chatwoot_4xx_fails_the_job_with_the_reason(
    client: TestClient,
    fake_chatwoot: FakeChatwoot,
    jobs,
    caplog: pytest.LogCaptureFixture,
    status_code,
    body,
    reason,
) -> None:
    fake_chatwoot.fail_next(1, status_code, body)
    with caplog.at_level(logging.DEBUG):
        response = post(client, chatwoot_payload())
        job = wait_for_job(jobs, response.json()["job_id"])

    assert job.status is JobStatus.FAILED
    assert job.attempts == 1 and len(fake_chatwoot.requests) == 1
    assert f"Chatwoot answered {status_code} to POST" in job.error
    assert MESSAGES_PATH in job.error and reason in job.error
    assert_no_secrets(job.error + all_logged(caplog))


def test_a_wrong_token_fails_the_job_without_revealing_it(
    make_client, fake_chatwoot: FakeChatwoot, jobs, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(chatwoot_api_token="cw-token-wrong-77aa")
    with caplog.at_level(logging.DEBUG):
        response = post(client, chatwoot_payload())
        job = wait_for_job(jobs, response.json()["job_id"])

    assert job.status is JobStatus.FAILED and job.attempts == 1
    assert "401" in job.error and "Invalid Access Token" in job.error
    assert "check the configured token" in job.error
    [request] = fake_chatwoot.requests
    assert request.headers["api_access_token"] == "cw-token-wrong-77aa"
    logged = job.error + all_logged(caplog)
    assert "cw-token-wrong-77aa" not in logged
    assert_no_secrets(logged)


# --- configuration and malformed input ------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"chatwoot_url": None}, "TEXTSUITE_SUPPORT_CHATWOOT_URL"),
        ({"chatwoot_api_token": None}, "TEXTSUITE_SUPPORT_CHATWOOT_API_TOKEN"),
        ({"chatwoot_webhook_secret": None}, "TEXTSUITE_SUPPORT_CHATWOOT_ALLOW_UNSIGNED"),
    ],
)
def test_not_configured_is_a_404_naming_the_variable(
    make_client, fake_chatwoot: FakeChatwoot, bot: FakeBot, overrides, variable
) -> None:
    client = make_client(**overrides)
    response = post(client, chatwoot_payload())

    assert response.status_code == 404
    assert variable in response.json()["detail"]
    assert bot.seen == [] and fake_chatwoot.requests == []


@pytest.mark.parametrize(
    ("body", "status_code", "detail"),
    [
        (b"{not json", 422, "not valid JSON"),
        (b"[1, 2]", 422, "must be a JSON object"),
        (b"\xff\xfe", 422, "not valid JSON"),
        (json.dumps({"event": "message_created", "id": 1}).encode(), 422, "message_type"),
        (
            json.dumps({**chatwoot_payload(), "conversation": {"status": "pending"}}).encode(),
            422,
            "conversation",
        ),
        (json.dumps({**chatwoot_payload(), "account": {"id": "seven"}}).encode(), 422, "account"),
        (json.dumps({**chatwoot_payload(), "event": ["message_created"]}).encode(), 422, "event"),
        (b"[" * 100_000 + b"]" * 100_000, 422, "nested deeper"),
        (
            json.dumps({**chatwoot_payload(), "content": "hi \ud800"}).encode(),
            422,
            "surrogate",
        ),
    ],
    ids=[
        "broken",
        "array",
        "not-utf8",
        "no-fields",
        "no-conversation-id",
        "bad-account",
        "event",
        "deep",
        "surrogate",
    ],
)
def test_malformed_webhooks_get_a_clear_4xx(
    client: TestClient, fake_chatwoot: FakeChatwoot, bot: FakeBot, body, status_code, detail
) -> None:
    response = post(client, body)

    assert response.status_code == status_code, response.text
    assert detail in json.dumps(response.json()["detail"])
    assert bot.seen == [] and fake_chatwoot.requests == []


def test_handoff_note_names_the_reason_and_guesses() -> None:
    reply = FakeBot._reply(IncomingMessage(Channel.CHATWOOT, "1", "anything"))

    assert handoff_note(reply).splitlines() == [
        "Handed over by the bot: the bot was not confident enough (low_confidence).",
        "Intent guesses: refund_request 41%, cancel_order 33%, payment_failed 12%.",
    ]


def test_the_delivery_jobs_need_no_webhook_secret() -> None:
    """Workers only call Chatwoot: the URL and token are all they are given."""
    worker_side = load_support_settings(
        _env_file=None, chatwoot_url="https://chat.example.com", chatwoot_api_token=TOKEN
    )
    assert ChatwootClient.from_settings(worker_side) is not None
