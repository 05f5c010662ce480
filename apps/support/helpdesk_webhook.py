"""The generic helpdesk webhook: a signed JSON message in, a signed JSON callback out.

Both directions use `core.signing`: headers `X-Textsuite-Timestamp` (unix seconds) and
`X-Textsuite-Signature: sha256=<hex HMAC-SHA256(secret, f"{timestamp}.{raw body}")>`.
Callbacks also carry `X-Textsuite-Delivery`, the same for every retry of one callback, so a
receiver can drop repeats.
"""

from __future__ import annotations

import uuid
from typing import Annotated

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints

from apps.support.messages import MAX_TEXT, BotReply, Channel, IncomingMessage, SlotValues
from apps.support.settings import SupportSettings
from core.delivery import post_json
from core.signing import signature_headers

CALLBACK_JOB = "support.webhook_callback"
HEADER_PREFIX = "X-Textsuite"
DELIVERY_HEADER = f"{HEADER_PREFIX}-Delivery"

Id = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class HelpdeskMessage(BaseModel):
    """A customer message as a helpdesk sends it to `POST /v1/support/webhooks/messages`."""

    model_config = ConfigDict(coerce_numbers_to_str=True)

    conversation_id: Id = Field(description="The helpdesk's conversation id.")
    message_id: Id = Field(description="The helpdesk's message id: a redelivery is answered once.")
    text: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TEXT)
    ]
    customer_id: Id | None = None
    customer_name: Annotated[str, StringConstraints(max_length=200)] | None = None
    metadata: SlotValues = Field(
        default_factory=dict, description="Slot values the helpdesk knows (e.g. order_id)."
    )

    def to_incoming(self) -> IncomingMessage:
        return IncomingMessage(
            channel=Channel.WEBHOOK,
            conversation_id=self.conversation_id,
            text=self.text,
            customer_id=self.customer_id,
            customer_name=self.customer_name,
            message_id=self.message_id,
            metadata=dict(self.metadata),
        )


class IntentGuess(BaseModel):
    intent: str
    confidence: float


class HelpdeskReply(BaseModel):
    """The bot's reply: the webhook's response body, and the callback's body."""

    conversation_id: str
    message_id: str
    intent: str | None
    confidence: float | None
    alternatives: list[IntentGuess]
    answer: str | None
    handoff: bool
    handoff_reason: str | None

    @classmethod
    def from_bot(cls, message: HelpdeskMessage, reply: BotReply) -> HelpdeskReply:
        return cls(
            conversation_id=message.conversation_id,
            message_id=message.message_id,
            intent=reply.intent,
            confidence=reply.confidence,
            alternatives=[
                IntentGuess(intent=a.intent, confidence=a.confidence) for a in reply.alternatives
            ],
            answer=reply.answer,
            handoff=reply.handoff,
            handoff_reason=reply.handoff_reason.value if reply.handoff_reason else None,
        )


class HelpdeskWebhookResponse(HelpdeskReply):
    duplicate: bool = Field(description="This message was answered before; same reply.")
    callback_job_id: uuid.UUID | None = Field(
        description="The job POSTing the callback; null when no callback URL is configured."
    )


def callback_signing_secret(settings: SupportSettings) -> SecretStr | None:
    """Callbacks are signed with `callback_secret`, or the inbound `webhook_secret` without one."""
    return settings.callback_secret or settings.webhook_secret


class CallbackNotConfigured(RuntimeError):
    """No callback URL or no secret to sign callbacks with."""


def send_callback(
    settings: SupportSettings,
    reply: HelpdeskReply,
    *,
    delivery_id: str,
    transport: httpx.BaseTransport | None = None,
) -> int:
    """POST `reply` to the configured callback URL, signed now; returns the status code.

    Signed at send time, so a callback retried minutes later still has a fresh timestamp.
    Raises `DeliveryUnavailable` (retry) or `DeliveryRejected` (give up).
    """
    secret = callback_signing_secret(settings)
    if settings.callback_url is None or secret is None:
        missing = (
            "TEXTSUITE_SUPPORT_CALLBACK_URL"
            if settings.callback_url is None
            else ("TEXTSUITE_SUPPORT_CALLBACK_SECRET (or TEXTSUITE_SUPPORT_WEBHOOK_SECRET)")
        )
        raise CallbackNotConfigured(f"cannot send the helpdesk callback: set {missing}")
    body = reply.model_dump_json().encode("utf-8")
    headers = {
        **signature_headers(secret.get_secret_value(), body, prefix=HEADER_PREFIX),
        DELIVERY_HEADER: delivery_id,
    }
    with httpx.Client(timeout=settings.delivery_timeout_s, transport=transport) as client:
        response = post_json(
            client,
            str(settings.callback_url),
            body,
            target="the helpdesk callback",
            headers=headers,
        )
    return response.status_code
