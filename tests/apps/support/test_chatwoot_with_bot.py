"""Chatwoot round trip with the real bot and a trained model: webhook in, Chatwoot API out."""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from core.settings import Settings
from core.storage.engine import get_session_factory
from core.storage.models import JobStatus
from tests.apps.support.fake_bot import configure_support
from tests.apps.support.fake_chatwoot import FakeChatwoot
from tests.apps.support.test_chatwoot import (
    ACCOUNT,
    MESSAGES_PATH,
    SECRET,
    TOKEN,
    WEBHOOK,
    chatwoot_payload,
    signed,
)
from tests.workers.conftest import wait_for_job
from textsuite.service import create_service


@pytest.fixture
def fake_chatwoot() -> Iterator[FakeChatwoot]:
    fake = FakeChatwoot(TOKEN).start()
    yield fake
    fake.stop()


@pytest.fixture
def client(
    world_settings: Settings, fake_chatwoot: FakeChatwoot, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    support = configure_support(
        monkeypatch,
        chatwoot_url=fake_chatwoot.url,
        chatwoot_api_token=TOKEN,
        chatwoot_webhook_secret=SECRET,
    )
    with TestClient(create_service(world_settings, support=support)) as test_client:
        yield test_client


def from_demo_customer(text: str, *, message_id: int, conversation: int) -> dict:
    """A webhook from Maya (cust-1001 in the demo customers), in conversation `conversation`."""
    payload = copy.deepcopy(chatwoot_payload(text, message_id=message_id))
    payload["conversation"]["id"] = conversation
    for sender in (payload["sender"], payload["conversation"]["meta"]["sender"]):
        sender.update(identifier="cust-1001", name="Maya Lindqvist", email="maya@example.com")
    return payload


def deliver(client: TestClient, payload: dict, settings: Settings) -> dict:
    body, headers = signed(payload)
    response = client.post(WEBHOOK, content=body, headers=headers)
    assert response.status_code == 200, response.text
    outcome = response.json()
    job = wait_for_job(get_session_factory(settings.database_url), outcome["job_id"])
    assert job.status is JobStatus.SUCCEEDED, job.error
    return outcome


def test_an_answer_reaches_the_customer_through_chatwoot(
    client: TestClient, fake_chatwoot: FakeChatwoot, world_settings: Settings
) -> None:
    outcome = deliver(
        client,
        from_demo_customer("hi, where is my order TH-104233?", message_id=901, conversation=42),
        world_settings,
    )
    assert outcome["action"] == "answer"
    (sent,) = fake_chatwoot.delivered()
    assert (sent.method, sent.path) == ("POST", MESSAGES_PATH)
    assert sent.headers["api_access_token"] == TOKEN
    assert sent.json["private"] is False and sent.json["message_type"] == "outgoing"
    assert "Maya" in sent.json["content"] and "TH-104233" in sent.json["content"]


def test_a_handoff_tells_the_customer_briefs_the_agent_and_opens_the_conversation(
    client: TestClient, fake_chatwoot: FakeChatwoot, world_settings: Settings
) -> None:
    outcome = deliver(
        client,
        from_demo_customer(
            "I want to speak to a real person please", message_id=902, conversation=43
        ),
        world_settings,
    )
    assert outcome["action"] == "handoff" and outcome["handoff"] is True
    base = f"/api/v1/accounts/{ACCOUNT}/conversations/43"
    told, note, toggle = fake_chatwoot.delivered()
    assert (told.path, told.json["private"]) == (f"{base}/messages", False)
    assert "colleague" in told.json["content"].lower()
    assert (note.path, note.json["private"]) == (f"{base}/messages", True)
    assert "talk_to_agent" in note.json["content"] and "asked_for_human" in note.json["content"]
    assert (toggle.path, toggle.json) == (f"{base}/toggle_status", {"status": "open"})


def test_a_conversation_chatwoot_makes_pending_again_is_the_bots_again(
    client: TestClient, fake_chatwoot: FakeChatwoot, world_settings: Settings
) -> None:
    """An agent hands it back (or resolves it and the customer writes again): Chatwoot says
    `pending`, and the bot answers instead of handing off again."""
    ask_for_person = from_demo_customer("I want a real person", message_id=911, conversation=44)
    assert deliver(client, ask_for_person, world_settings)["action"] == "handoff"
    assert fake_chatwoot.statuses == {44: "open"}
    assert deliver(client, ask_for_person, world_settings)["duplicate"] is True  # redelivered
    # Written before the handoff reached Chatwoot (still `pending` then), delivered late: it
    # goes to the person like the conversation does.
    late = from_demo_customer("hello?", message_id=912, conversation=44)
    assert deliver(client, late, world_settings)["handoff"] is True

    again = from_demo_customer("where is my order TH-104233?", message_id=913, conversation=44)
    again["created_at"] = dt.datetime.now(dt.UTC).isoformat()  # written after it was given back
    outcome = deliver(client, again, world_settings)

    assert (outcome["action"], outcome["handoff"]) == ("answer", False)
    assert "TH-104233" in fake_chatwoot.delivered()[-1].json["content"]


def test_pending_before_the_handoff_reached_chatwoot_still_goes_to_the_person(
    client: TestClient, fake_chatwoot: FakeChatwoot, world_settings: Settings
) -> None:
    """While Chatwoot is unreachable the handoff waits in its job, so the conversation is still
    `pending` there: the customer's next message must not bring the bot back."""
    fake_chatwoot.stop()
    outcomes = []
    for message_id, text in [(921, "I want a real person"), (922, "where is my order?")]:
        body, headers = signed(from_demo_customer(text, message_id=message_id, conversation=45))
        outcomes.append(client.post(WEBHOOK, content=body, headers=headers).json())

    assert [(o["action"], o["handoff"]) for o in outcomes] == [("handoff", True)] * 2
    fake_chatwoot.start()
    for outcome in outcomes:
        job = wait_for_job(get_session_factory(world_settings.database_url), outcome["job_id"])
        assert job.status is JobStatus.SUCCEEDED, job.error
    notes = [r.json["content"] for r in fake_chatwoot.delivered() if r.json.get("private")]
    assert sorted("already_handed_off" in note for note in notes) == [False, True]
