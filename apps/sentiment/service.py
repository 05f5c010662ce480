"""How the sentiment monitor plugs into the service: its routes and its start-up/shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

import redis
from fastapi import APIRouter, FastAPI
from sqlalchemy.orm import Session, sessionmaker

from apps.sentiment import stream
from apps.sentiment.articles import ArticleIn
from apps.sentiment.ingest import Ingested, Ingestor
from apps.sentiment.scoring import SentimentScorer
from apps.sentiment.settings import SentimentSettings, get_sentiment_settings
from core.ml.serving import ProductionClassifier
from core.settings import Settings


@dataclass
class SentimentService:
    """What the routes need: the ingestor, and the stream when one is configured."""

    settings: SentimentSettings
    ingestor: Ingestor
    stream_client: redis.Redis | None

    @classmethod
    def create(
        cls, settings: Settings, sentiment: SentimentSettings, factory: sessionmaker[Session]
    ) -> SentimentService:
        model = ProductionClassifier(settings, factory, sentiment.model_name)
        client = stream.connect(sentiment.stream_url) if sentiment.stream_url else None
        return cls(sentiment, Ingestor(factory, SentimentScorer(model)), client)

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

    def close(self) -> None:
        if self.stream_client is not None:
            self.stream_client.close()


def sentiment_router() -> APIRouter:
    from apps.sentiment.api import articles, entities

    router = APIRouter(prefix="/v1/sentiment")
    for module in (articles, entities):
        router.include_router(module.router)
    return router


def sentiment_lifespan(
    sentiment: SentimentSettings | None = None,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """An app lifespan (for `core.api.create_app(lifespans=...)`)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = SentimentService.create(
            app.state.settings, sentiment or get_sentiment_settings(), app.state.session_factory
        )
        app.state.sentiment = service
        try:
            yield
        finally:
            service.close()

    return lifespan
