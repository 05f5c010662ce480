"""What goes into the bot and what comes out, whatever the channel (API, Chatwoot, webhook)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any, Protocol

from pydantic import BeforeValidator

# What a customer's message and its slot values may be, on every channel.
MAX_TEXT = 2000
SlotValue = str | int | float | bool | None


def _flat(values: object) -> object:
    """Slot values are text, numbers, true/false or null: one clear error for anything else
    (pydantic would report each of the union's members)."""
    if isinstance(values, dict):
        for key, value in values.items():
            if value is not None and not isinstance(value, str | int | float | bool):
                kind = "a list" if isinstance(value, list) else "an object"
                raise ValueError(
                    f"{key!r} is {kind}; a value must be text, a number, true/false or null"
                )
    return values


SlotValues = Annotated[dict[str, SlotValue], BeforeValidator(_flat)]


class Channel(StrEnum):
    API = "api"
    CHATWOOT = "chatwoot"
    WEBHOOK = "webhook"


class HandoffReason(StrEnum):
    LOW_CONFIDENCE = "low_confidence"  # top-1 probability under the calibrated threshold
    AMBIGUOUS = "ambiguous"  # top-1 and top-2 too close
    UNFAMILIAR = "unfamiliar"  # unlike every example the model was trained on
    ASKED_FOR_HUMAN = "asked_for_human"  # the customer wants a person
    REPEATED_FAILURE = "repeated_failure"  # several unanswered messages in a row
    MISSING_INFORMATION = "missing_information"  # the answer needs a value nobody gave
    NO_ANSWER = "no_answer"  # the intent has no answer template yet
    NO_MODEL = "no_model"  # nothing trained yet
    ALREADY_HANDED_OFF = "already_handed_off"  # a person has the conversation


@dataclass(frozen=True)
class IncomingMessage:
    channel: Channel
    conversation_id: str  # the channel's id for the conversation
    text: str
    customer_id: str | None = None
    customer_name: str | None = None
    message_id: str | None = None  # the channel's message id: a redelivery is answered once
    metadata: dict[str, Any] = field(default_factory=dict)  # slot values the caller knows
    channel_data: dict[str, Any] = field(default_factory=dict)  # needed to reply (no secrets)

    def __post_init__(self) -> None:
        # NUL characters mean nothing in a message, and PostgreSQL stores none: dropped here,
        # whatever the channel, before any of the turn is written.
        for name in ("conversation_id", "text", "customer_id", "customer_name", "message_id"):
            object.__setattr__(self, name, _without_nul(getattr(self, name)))
        object.__setattr__(self, "metadata", _without_nul(self.metadata))


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


@dataclass(frozen=True)
class Alternative:
    intent: str
    confidence: float


@dataclass(frozen=True)
class BotReply:
    message_id: uuid.UUID  # the stored customer message
    conversation_id: uuid.UUID  # the stored conversation
    intent: str | None
    confidence: float | None
    alternatives: list[Alternative]
    answer: str | None  # None when handing off
    handoff: bool
    handoff_reason: HandoffReason | None
    duplicate: bool = False  # the same channel message was answered before
    other_text: bool = False  # ...though its message id came with other text this time


class AnswersMessages(Protocol):
    """The bot as the channels see it."""

    async def handle(self, message: IncomingMessage) -> BotReply: ...
