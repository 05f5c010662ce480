"""How the sentiment monitor plugs into the service: its routes and its start-up/shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field

import redis
from fastapi import APIRouter, FastAPI
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from apps.sentiment import stream
from apps.sentiment.alerts import AlertChange
from apps.sentiment.articles import ArticleIn
from apps.sentiment.feed import AlertFeed
from apps.sentiment.ingest import Ingested, Ingestor
from apps.sentiment.notify import notify_changes
from apps.sentiment.scoring import SentimentScorer
from apps.sentiment.settings import SentimentSettings, get_sentiment_settings
from core.jobs import JobDispatcher
from core.ml.serving import ProductionClassifier
from core.settings import Settings

log = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 60.0


@dataclass
class SentimentService:
    """The monitor in one process: the ingestor (alerts, notifications), and the stream when
    one is configured."""

    settings: SentimentSettings
    ingestor: Ingestor
    stream_client: redis.Redis | None
    alert_feed: AlertFeed | None = field(default=None)

    @classmethod
    def create(
        cls,
        settings: Settings,
        sentiment: SentimentSettings,
        factory: sessionmaker[Session],
        dispatcher: JobDispatcher | None = None,
    ) -> SentimentService:
        """`dispatcher` submits the notification jobs of alerts this process raises."""
        model = ProductionClassifier(settings, factory, sentiment.model_name)

        def announce(changes: list[AlertChange]) -> None:
            if dispatcher is not None:
                notify_changes(factory, dispatcher, changes)

        ingestor = Ingestor(factory, SentimentScorer(model), on_alerts=announce)
        client = stream.connect(sentiment.stream_url) if sentiment.stream_url else None
        return cls(sentiment, ingestor, client)

    async def ingest_now(self, items: Sequence[ArticleIn]) -> list[Ingested]:
        return await asyncio.to_thread(self.ingestor.ingest, items)

    async def publish(self, items: Sequence[ArticleIn]) -> list[str]:
        assert self.stream_client is not None
        return await asyncio.to_thread(
            stream.publish,
            self.stream_client,
            self.settings.stream_name,
            items,
            self.settings.stream_max_length,
        )

    async def sweep_forever(self) -> None:
        """Resolve the alerts of entities that went quiet (no article re-evaluates them)."""
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            try:
                await asyncio.to_thread(self.ingestor.sweep)
            except SQLAlchemyError as exc:
                log.warning("alert sweep failed: %s", exc)

    def close(self) -> None:
        if self.stream_client is not None:
            self.stream_client.close()


def sentiment_router() -> APIRouter:
    from apps.sentiment.api import alerts, articles, entities, feeds, rules

    router = APIRouter(prefix="/v1/sentiment")
    for module in (articles, entities, alerts, rules, feeds):
        router.include_router(module.router)
    return router


def sentiment_lifespan(
    sentiment: SentimentSettings | None = None,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """An app lifespan (for `core.api.create_app(lifespans=...)`)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from apps.sentiment.api.alerts import alert_out

        factory = app.state.session_factory
        service = SentimentService.create(
            app.state.settings,
            sentiment or get_sentiment_settings(),
            factory,
            app.state.dispatcher,
        )
        service.alert_feed = AlertFeed(factory, lambda a: alert_out(a).model_dump(mode="json"))
        app.state.sentiment = service
        await service.alert_feed.start()
        sweeper = asyncio.create_task(service.sweep_forever(), name="sentiment-sweep")
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            await service.alert_feed.stop()
            service.close()

    return lifespan
