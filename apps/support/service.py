"""How the support bot plugs into the service: its routes and its start-up/shutdown."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import APIRouter, FastAPI
from sqlalchemy.orm import Session, sessionmaker

from apps.support.api import catalogue, chatwoot, messages, review, stats, webhooks
from apps.support.bot import SupportBot
from apps.support.retention import RETENTION_WORK, retention
from apps.support.settings import SupportSettings, get_support_settings
from apps.support.training import RETRAIN_WORK, retraining
from core.jobs import JobDispatcher
from core.ml.versions import production_files_check
from core.scheduling import PeriodicWork, periodic

PERIODIC_WORK = (RETRAIN_WORK, RETENTION_WORK)  # every piece there is, on or off


def periodic_work(
    support: SupportSettings, factory: sessionmaker[Session], dispatcher: JobDispatcher
) -> dict[str, PeriodicWork]:
    """The bot's periodic work that its settings turn on: scheduled retraining, retention."""
    return {
        **retraining(support, factory).work(dispatcher),
        **retention(support.retention_days, factory).work(),
    }


def support_router() -> APIRouter:
    router = APIRouter(prefix="/v1/support")
    for module in (messages, catalogue, review, stats, chatwoot, webhooks):
        router.include_router(module.router)
    return router


def support_lifespan(
    support: SupportSettings | None = None,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """An app lifespan (for `core.api.create_app(lifespans=...)`) that runs the bot."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings = support or get_support_settings()
        bot = SupportBot(app.state.settings, settings, app.state.session_factory)
        app.state.support_settings = settings
        app.state.support_bot = bot
        app.state.extra_readiness_checks["support_model"] = production_files_check(
            app.state.session_factory,
            settings.model_name,
            bot.not_serving,
            untrained="none trained yet: every message is handed off (`textsuite train "
            "support`, or `POST /v1/support/train`)",
        )
        await bot.start()
        work = periodic_work(settings, app.state.session_factory, app.state.dispatcher)
        try:
            async with periodic(app.state.settings, work):
                yield
        finally:
            await bot.stop()

    return lifespan
