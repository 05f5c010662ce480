"""A deterministic stand-in for the support bot, and the app the webhook tests serve.

The bot answers "Your order ships tomorrow." to texts mentioning an order and hands off
everything else; like the real bot, it answers a channel message id once and returns the same
outcome (flagged `duplicate`) when it comes again.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from apps.support.api import chatwoot, webhooks
from apps.support.messages import (
    Alternative,
    BotReply,
    Channel,
    HandoffReason,
    IncomingMessage,
)
from apps.support.settings import SupportSettings, load_support_settings
from core.api import create_app
from core.settings import Settings
from workers.dispatch import create_dispatcher
from workers.tasks import support_delivery

ORDER_ANSWER = "Your order ships tomorrow."
DELIVERY_TASKS = "workers.tasks.support_delivery"


class FakeBot:
    def __init__(self) -> None:
        self.seen: list[IncomingMessage] = []
        self._answered: dict[tuple[Channel, str], BotReply] = {}

    async def handle(self, message: IncomingMessage) -> BotReply:
        self.seen.append(message)
        key = (message.channel, message.message_id or "")
        if message.message_id and key in self._answered:
            return dataclasses.replace(self._answered[key], duplicate=True)
        reply = self._reply(message)
        if message.message_id:
            self._answered[key] = reply
        return reply

    @staticmethod
    def _reply(message: IncomingMessage) -> BotReply:
        conversation = uuid.uuid5(
            uuid.NAMESPACE_URL, f"{message.channel}:{message.conversation_id}"
        )
        if "order" in message.text.lower():
            return BotReply(
                message_id=uuid.uuid4(),
                conversation_id=conversation,
                intent="order_status",
                confidence=0.93,
                alternatives=[
                    Alternative("order_status", 0.93),
                    Alternative("shipping_time", 0.04),
                    Alternative("refund_request", 0.01),
                ],
                answer=ORDER_ANSWER,
                handoff=False,
                handoff_reason=None,
            )
        return BotReply(
            message_id=uuid.uuid4(),
            conversation_id=conversation,
            intent="refund_request",
            confidence=0.41,
            alternatives=[
                Alternative("refund_request", 0.41),
                Alternative("cancel_order", 0.33),
                Alternative("payment_failed", 0.12),
            ],
            answer=None,
            handoff=True,
            handoff_reason=HandoffReason.LOW_CONFIDENCE,
        )


def build_support_app(settings: Settings, support: SupportSettings, bot: FakeBot) -> FastAPI:
    """Core's app with the webhook routers under `/v1/support`, as the service mounts them."""
    support_router = APIRouter(prefix="/v1/support")
    support_router.include_router(chatwoot.router)
    support_router.include_router(webhooks.router)
    settings = settings.model_copy(update={"worker_imports": [DELIVERY_TASKS]})
    app = create_app(settings, dispatcher=create_dispatcher(settings), routers=[support_router])
    app.state.support_bot = bot
    app.state.support_settings = support
    return app


def configure_support(monkeypatch: pytest.MonkeyPatch, **values: object) -> SupportSettings:
    """Support settings for one test, seen by the routes and by the delivery jobs alike.

    Nothing comes from the developer's environment or `.env`; the jobs read these settings
    where a worker would read `TEXTSUITE_SUPPORT_*`.
    """
    for name in list(os.environ):
        if name.startswith("TEXTSUITE_SUPPORT_"):
            monkeypatch.delenv(name)
    support = load_support_settings(_env_file=None, **values)
    monkeypatch.setattr(support_delivery, "get_support_settings", lambda: support)
    return support


@contextmanager
def support_clients(
    settings: Settings, bot: FakeBot, monkeypatch: pytest.MonkeyPatch, **defaults: object
) -> Iterator[Callable[..., TestClient]]:
    """`make(**overrides)` builds a started test client on `defaults` updated by `overrides`;
    every client made is shut down on exit."""
    with ExitStack() as stack:

        def make(**overrides: object) -> TestClient:
            support = configure_support(monkeypatch, **{**defaults, **overrides})
            return stack.enter_context(TestClient(build_support_app(settings, support, bot)))

        yield make
