"""Chatwoot as a channel: the agent-bot webhook payload, what to ignore, and the API client.

Chatwoot POSTs every event of the bot's inboxes to the webhook. The bot answers only
`message_created` events for `incoming`, non-private messages in `pending` conversations (the
status Chatwoot gives conversations that a bot handles); anything else belongs to a person.
Replies go back through Chatwoot's REST API, from a background job (`support.chatwoot_reply`).
A conversation the bot handed off is the bot's again when Chatwoot makes it `pending` once more
(`give_back_if_pending_again`).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

import httpx
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from apps.support.messages import BotReply, Channel, HandoffReason, IncomingMessage
from apps.support.models import Conversation, Message
from apps.support.models import ConversationStatus as Handler
from apps.support.settings import SupportSettings
from core.delivery import post_json
from core.storage.engine import session_scope
from core.storage.models import Job, JobStatus

REPLY_JOB = "support.chatwoot_reply"
CLOCK_SLACK = dt.timedelta(seconds=2)
SIGNATURE_HEADER = "X-Chatwoot-Signature"
TIMESTAMP_HEADER = "X-Chatwoot-Timestamp"
DELIVERY_HEADER = "X-Chatwoot-Delivery"

# Some Chatwoot versions send the Rails enum values instead of their names.
_MESSAGE_TYPES = {0: "incoming", 1: "outgoing", 2: "activity", 3: "template"}
_CONVERSATION_STATUSES = {0: "open", 1: "resolved", 2: "pending", 3: "snoozed"}


def _enum_name(names: dict[int, str]) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            return names.get(value, str(value))
        if isinstance(value, str) and value.strip().isdigit():
            return names.get(int(value), value)
        return value

    return convert


MessageType = Annotated[str, BeforeValidator(_enum_name(_MESSAGE_TYPES))]
ConversationStatus = Annotated[str, BeforeValidator(_enum_name(_CONVERSATION_STATUSES))]


class _Payload(BaseModel):
    """Chatwoot adds fields between versions: keep what we use, ignore the rest."""

    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)


class ChatwootContact(_Payload):
    id: int | str | None = None
    name: str | None = None
    email: str | None = None
    phone_number: str | None = None
    identifier: str | None = None
    type: str | None = None  # on `sender`: contact, user, agent_bot...


class ChatwootConversationMeta(_Payload):
    sender: ChatwootContact | None = None
    assignee: dict[str, Any] | None = None


class ChatwootConversation(_Payload):
    id: int
    status: ConversationStatus | None = None
    inbox_id: int | None = None
    meta: ChatwootConversationMeta = Field(default_factory=ChatwootConversationMeta)


class ChatwootAccount(_Payload):
    id: int
    name: str | None = None


class ChatwootInbox(_Payload):
    id: int | None = None
    name: str | None = None


class ChatwootEvent(_Payload):
    """Only the envelope: every webhook has an `event` name."""

    event: str | None = None


class ChatwootMessageCreated(_Payload):
    """A `message_created` webhook, as the agent bot receives it."""

    event: Literal["message_created"]
    id: int | str  # the message id
    content: str | None = None
    message_type: MessageType
    private: bool | None = False
    created_at: int | str | None = None
    conversation: ChatwootConversation
    sender: ChatwootContact | None = None
    account: ChatwootAccount
    inbox: ChatwootInbox | None = None


def ignore_reason(event: ChatwootEvent) -> str | None:
    """Why this event is not for the bot; `None` when it may be a `message_created` to answer."""
    if event.event != "message_created":
        return f"event {event.event!r} is not handled; only 'message_created' is"
    return None


def message_ignore_reason(message: ChatwootMessageCreated) -> str | None:
    """Why the bot must not answer this message; `None` when it should."""
    if message.message_type != "incoming":
        return f"message_type {message.message_type!r} is not an incoming customer message"
    if message.private:
        return "private notes are for agents"
    status = message.conversation.status
    if status != "pending":
        return (
            f"conversation {message.conversation.id} is {status!r}, not 'pending': "
            "a person handles it"
        )
    if not (message.content or "").strip():
        return "the message has no text (attachments only)"
    return None


def give_back_if_pending_again(
    factory: sessionmaker[Session], message: ChatwootMessageCreated
) -> bool:
    """Give a handed-off conversation back to the bot when Chatwoot says it is `pending` again.

    Chatwoot makes a conversation `pending` when an agent hands it back to the bot, and when a
    customer writes again in a conversation an agent resolved in an inbox with a bot. That
    counts only for a message written after the bot's latest handoff reached Chatwoot (its
    reply job, which set the conversation `open`, succeeded before the message was created):
    before that, `pending` is just the state the handoff had not changed yet, and the
    customer's words still go to the person. A redelivered message changes nothing.
    """
    written_at = created_at(message)
    with session_scope(factory) as session:
        conversation = session.scalars(
            select(Conversation).where(
                Conversation.channel == Channel.CHATWOOT,
                Conversation.external_id == str(message.conversation.id),
            )
        ).first()
        if conversation is None or conversation.status is not Handler.HANDED_OFF:
            return False
        seen = session.scalars(
            select(Message.id).where(
                Message.conversation_id == conversation.id,
                Message.external_id == str(message.id),
            )
        ).first()
        handoff = session.scalars(
            select(Message.id)
            .where(Message.conversation_id == conversation.id, Message.handoff.is_(True))
            .order_by(Message.created_at.desc())
            .limit(1)
        ).first()
        if seen is not None or handoff is None:
            return False
        delivery = session.scalars(
            select(Job).where(Job.idempotency_key == reply_job_key(handoff))
        ).first()
        if delivery is None or delivery.status is not JobStatus.SUCCEEDED:
            return False
        finished = delivery.finished_at
        # Chatwoot may send whole seconds, and its clock is not ours: a message stamped
        # within CLOCK_SLACK before the handoff finished counts as written after it.
        if written_at is not None and finished is not None and written_at < finished - CLOCK_SLACK:
            return False
        conversation.give_back_to_bot()
        return True


def created_at(message: ChatwootMessageCreated) -> dt.datetime | None:
    """When Chatwoot says the message was written (epoch seconds or ISO 8601), if it says."""
    value = message.created_at
    try:
        if isinstance(value, int):
            return dt.datetime.fromtimestamp(value, dt.UTC)
        if isinstance(value, str):
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    except (ValueError, OverflowError, OSError):
        pass
    return None


def reply_job_key(message_id: object) -> str:
    """The idempotency key of the job that delivers the reply to a stored message."""
    return f"{REPLY_JOB}:{message_id}"


def to_incoming(message: ChatwootMessageCreated) -> IncomingMessage:
    """The bot's view of a Chatwoot message; `channel_data` holds what the reply job needs."""
    contact = message.conversation.meta.sender
    if contact is None and message.sender is not None and message.sender.type in (None, "contact"):
        contact = message.sender
    customer_id = None
    if contact is not None:
        # The shop's own id for them where Chatwoot has it, else Chatwoot's: never the email,
        # which would be kept unmasked as the customer's key.
        customer_id = contact.identifier
        if customer_id is None and contact.id is not None:
            customer_id = str(contact.id)
    inbox_id = message.conversation.inbox_id or (message.inbox.id if message.inbox else None)
    return IncomingMessage(
        channel=Channel.CHATWOOT,
        conversation_id=str(message.conversation.id),
        text=(message.content or "").strip(),
        customer_id=customer_id,
        customer_name=contact.name if contact else None,
        message_id=str(message.id),
        channel_data={
            "account_id": message.account.id,
            "conversation_id": message.conversation.id,
            "inbox_id": inbox_id,
        },
    )


# --- what goes back -----------------------------------------------------------------------

_HANDOFF_EXPLANATIONS = {
    HandoffReason.LOW_CONFIDENCE: "the bot was not confident enough",
    HandoffReason.AMBIGUOUS: "two intents were too close to call",
    HandoffReason.UNFAMILIAR: "the message is unlike anything the bot was trained on",
    HandoffReason.ASKED_FOR_HUMAN: "the customer asked for a person",
    HandoffReason.REPEATED_FAILURE: "the customer asked the same question again after its answer",
    HandoffReason.MISSING_INFORMATION: "the answer needs information the customer has not given",
    HandoffReason.NO_ANSWER: "the intent has no answer template yet",
    HandoffReason.NO_MODEL: "no intent model is trained yet",
    HandoffReason.ALREADY_HANDED_OFF: "the conversation was already handed to a person",
}


def handoff_note(reply: BotReply) -> str:
    """The private note an agent sees when the bot hands a conversation over."""
    reason = reply.handoff_reason
    why = _HANDOFF_EXPLANATIONS.get(reason, "the bot could not answer") if reason else None
    lines = [f"Handed over by the bot: {why} ({reason.value})." if reason else "Handed over."]
    guesses: list[tuple[str, float | None]] = []
    if reply.intent is not None:
        guesses.append((reply.intent, reply.confidence))
    guesses += [(a.intent, a.confidence) for a in reply.alternatives if a.intent != reply.intent]
    if guesses:
        shown = ", ".join(
            f"{intent} {confidence:.0%}" if confidence is not None else intent
            for intent, confidence in guesses[:3]
        )
        lines.append(f"Intent guesses: {shown}.")
    else:
        lines.append("Intent guesses: none.")
    return "\n".join(lines)


class ChatwootReplyParams(BaseModel):
    """Parameters of a `support.chatwoot_reply` job: ids and text, never a token."""

    account_id: int
    conversation_id: int
    message_id: str = Field(description="The stored customer message the reply belongs to.")
    action: Literal["answer", "handoff"]
    content: str = Field(min_length=1, description="The answer, or the agent's private note.")
    customer_message: str | None = Field(
        default=None, description="On handoff: what the customer is told (e.g. who takes over)."
    )


def reply_params(message: IncomingMessage, reply: BotReply) -> ChatwootReplyParams | None:
    """What to send back for `reply`; `None` when there is nothing to send."""
    common = {
        "account_id": message.channel_data["account_id"],
        "conversation_id": message.channel_data["conversation_id"],
        "message_id": str(reply.message_id),
    }
    if reply.handoff:
        return ChatwootReplyParams(
            action="handoff",
            content=handoff_note(reply),
            customer_message=reply.answer,
            **common,
        )
    if reply.answer:
        return ChatwootReplyParams(action="answer", content=reply.answer, **common)
    return None


# --- the API client -----------------------------------------------------------------------


class ChatwootNotConfigured(RuntimeError):
    """Chatwoot's URL or token is missing from the settings."""


def missing_chatwoot_settings(settings: SupportSettings) -> list[str]:
    """The environment variables that must be set before the bot can talk to Chatwoot."""
    missing = []
    if settings.chatwoot_url is None:
        missing.append("TEXTSUITE_SUPPORT_CHATWOOT_URL")
    if settings.chatwoot_api_token is None:
        missing.append("TEXTSUITE_SUPPORT_CHATWOOT_API_TOKEN")
    return missing


def missing_webhook_settings(settings: SupportSettings) -> list[str]:
    """What the webhook needs on top: a secret to verify Chatwoot's signature with, unless
    unsigned webhooks are allowed. (The delivery jobs only call Chatwoot: they need neither.)"""
    missing = missing_chatwoot_settings(settings)
    if settings.chatwoot_webhook_secret is None and not settings.chatwoot_allow_unsigned:
        missing.append(
            "TEXTSUITE_SUPPORT_CHATWOOT_WEBHOOK_SECRET "
            "(or TEXTSUITE_SUPPORT_CHATWOOT_ALLOW_UNSIGNED=true for a Chatwoot that does not sign)"
        )
    return missing


class ChatwootClient:
    """The two calls the bot makes: post a message (public or private), open a conversation.

    Failures raise `core.delivery.DeliveryUnavailable` (retry later) or
    `DeliveryRejected` (give up), with messages that never contain the token.
    """

    def __init__(
        self,
        base_url: str,
        api_token: str,
        *,
        timeout_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            headers={"api_access_token": api_token, "Accept": "application/json"},
            timeout=timeout_s,
            transport=transport,
        )

    @classmethod
    def from_settings(cls, settings: SupportSettings) -> ChatwootClient:
        missing = missing_chatwoot_settings(settings)
        if missing:
            raise ChatwootNotConfigured(f"Chatwoot is not configured: set {', '.join(missing)}")
        assert settings.chatwoot_url is not None and settings.chatwoot_api_token is not None
        return cls(
            str(settings.chatwoot_url),
            settings.chatwoot_api_token.get_secret_value(),
            timeout_s=settings.delivery_timeout_s,
        )

    def _conversation_url(self, account_id: int, conversation_id: int) -> str:
        return f"{self._base_url}/api/v1/accounts/{account_id}/conversations/{conversation_id}"

    def _post(self, url: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        body = json.dumps(dict(payload)).encode("utf-8")
        response = post_json(self._http, url, body, target="Chatwoot", whole_path=True)
        try:
            data = response.json()
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def create_message(
        self, account_id: int, conversation_id: int, content: str, *, private: bool
    ) -> dict[str, Any]:
        """`POST .../conversations/{id}/messages`; returns Chatwoot's message object."""
        return self._post(
            f"{self._conversation_url(account_id, conversation_id)}/messages",
            {"content": content, "message_type": "outgoing", "private": private},
        )

    def open_conversation(self, account_id: int, conversation_id: int) -> dict[str, Any]:
        """`POST .../conversations/{id}/toggle_status` `{"status": "open"}`: off to the agents."""
        return self._post(
            f"{self._conversation_url(account_id, conversation_id)}/toggle_status",
            {"status": "open"},
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ChatwootClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def deliver_reply(
    client: ChatwootClient,
    params: ChatwootReplyParams,
    *,
    done: Mapping[str, Any] | None = None,
    record: Callable[[str, Any], None] | None = None,
) -> dict[str, Any]:
    """Send an answer, or hand off: a private note for the agent, then open the conversation.

    A handoff has up to three steps: tell the customer (when there is something to tell), the
    note, opening the conversation. `done` lists the steps a previous attempt completed (step
    name to Chatwoot's id for it) and `record(step, value)` is called as each one succeeds, so
    a retried job never posts a message twice. Opening a conversation twice is harmless.
    """
    ids = (params.account_id, params.conversation_id)
    if params.action == "answer":
        message = client.create_message(*ids, params.content, private=False)
        return {"action": "answer", "chatwoot_message_id": message.get("id")}
    completed = dict(done or {})
    if params.customer_message and "customer_message" not in completed:
        told = client.create_message(*ids, params.customer_message, private=False)
        completed["customer_message"] = told.get("id")
        if record is not None:
            record("customer_message", told.get("id"))
    if "private_note" not in completed:
        note = client.create_message(*ids, params.content, private=True)
        completed["private_note"] = note.get("id")
        if record is not None:
            record("private_note", note.get("id"))
    toggled = client.open_conversation(*ids)
    payload = toggled.get("payload") if isinstance(toggled.get("payload"), dict) else {}
    return {
        "action": "handoff",
        "private_note_id": completed["private_note"],
        "conversation_status": payload.get("current_status", "open"),
    }
