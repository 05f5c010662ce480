"""How the sentiment monitor plugs into the service: its routes and its start-up/shutdown."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field

import redis
from fastapi import APIRouter, FastAPI
from sqlalchemy.orm import Session, sessionmaker

from apps.sentiment import stream
from apps.sentiment.alerts import AlertChange
from apps.sentiment.articles import ArticleIn
from apps.sentiment.feed import AlertFeed
from apps.sentiment.feeds import poll_due_feeds
from apps.sentiment.ingest import Ingested, Ingestor
from apps.sentiment.notify import notify_changes
from apps.sentiment.retention import RETENTION_WORK, oldest_kept, retention
from apps.sentiment.scoring import NoSentimentModel, SentimentScorer
from apps.sentiment.settings import SentimentSettings, get_sentiment_settings
from apps.sentiment.training import RETRAIN_WORK, retraining
from core.delivery import redact_url
from core.jobs import JobDispatcher
from core.ml.serving import ProductionClassifier, ServingBatcher
from core.ml.versions import production_files_check
from core.scheduling import PeriodicWork, periodic
from core.settings import Settings

log = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 60.0
SWEEP_WORK, FEEDS_WORK = "alert sweep", "feed polling"
PERIODIC_WORK = (SWEEP_WORK, FEEDS_WORK, RETRAIN_WORK, RETENTION_WORK)  # every piece, on or off
DURABILITY_TTL_S = 60.0
LOSSY = {
    "none": "keeps nothing on disk",
    "snapshots": "keeps only periodic snapshots",
}


@dataclass(frozen=True)
class Queued:
    stream_ids: list[str]
    durability: str  # `stream.durability` of the Redis that holds them


class NotDurable(Exception):
    """Durability is required and the stream's Redis would lose queued articles."""


@dataclass
class SentimentService:
    """The monitor in one process: the ingestor (alerts, notifications), and the stream when
    one is configured."""

    settings: SentimentSettings
    ingestor: Ingestor
    stream_client: redis.Redis | None
    batcher: ServingBatcher | None = None  # started and stopped by the app's lifespan
    alert_feed: AlertFeed | None = field(default=None)
    _durability: tuple[float, str] | None = field(default=None, repr=False)

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

        batcher = ServingBatcher(settings.batching(), sentiment.model_name)
        ingestor = Ingestor(factory, SentimentScorer(model, batcher), on_alerts=announce)
        client = stream.connect(sentiment.stream_url) if sentiment.stream_url else None
        return cls(sentiment, ingestor, client, batcher)

    async def ingest_now(self, items: Sequence[ArticleIn]) -> list[Ingested]:
        return await asyncio.to_thread(self.ingestor.ingest, items)

    def publish_now(self, items: Sequence[ArticleIn]) -> Queued:
        """Queue on the stream; raises `stream.StreamFull` past the backlog limit and
        `NotDurable` when durability is required and Redis keeps nothing on disk."""
        assert self.stream_client is not None
        persistence = self.durability()
        if self.settings.stream_require_durable and not persistence.startswith("aof"):
            raise NotDurable(
                f"the ingest stream's Redis does not write an append-only file (persistence:"
                f" {persistence}) and TEXTSUITE_SENTIMENT_STREAM_REQUIRE_DURABLE is set;"
                " nothing was queued"
            )
        ids = stream.publish(
            self.stream_client,
            self.settings.stream_name,
            items,
            group=self.settings.stream_group,
            max_backlog=self.settings.stream_max_backlog,
        )
        return Queued(ids, persistence)

    async def publish(self, items: Sequence[ArticleIn]) -> Queued:
        return await asyncio.to_thread(self.publish_now, items)

    def durability(self) -> str:
        """The stream's `stream.durability`, asked of Redis at most once a minute."""
        assert self.stream_client is not None
        now = time.monotonic()
        if self._durability is None or now - self._durability[0] > DURABILITY_TTL_S:
            self._durability = (now, stream.durability(self.stream_client))
        return self._durability[1]

    def check_stream(self) -> str | None:
        """Readiness: the stream's Redis answers; without one, say where articles are scored
        (a deployment with workers may have meant to queue them for consumers)."""
        if self.stream_client is None:
            return (
                "none configured: posted articles are scored in this process "
                "(TEXTSUITE_SENTIMENT_STREAM_URL queues them for `textsuite sentiment consume`)"
            )
        self.stream_client.ping()
        return None

    def ingest_feed_entries(self, items: Sequence[ArticleIn]) -> list[Ingested | None]:
        """`ingestor.ingest`, leaving out entries older than retention keeps (None in their
        place): a feed goes on listing its old entries, and each would be stored and deleted
        again every hour."""
        oldest = oldest_kept(self.ingestor.factory, self.settings.retention_days)
        kept = [
            i
            for i, item in enumerate(items)
            if oldest is None or item.published_at is None or item.published_at >= oldest
        ]
        results: list[Ingested | None] = [None] * len(items)
        for i, result in zip(kept, self.ingestor.ingest([items[i] for i in kept]), strict=True):
            results[i] = result
        return results

    def poll_feeds(self) -> None:
        """Poll the feeds that are due (each claimed in the database by one process)."""
        try:
            results = poll_due_feeds(
                self.ingestor.factory,
                self.ingest_feed_entries,
                self.settings.feed_poll_s,
                ready=self.ingestor.scorer.served,
            )
        except NoSentimentModel as exc:
            log.info("feeds not polled: %s", exc)
            return
        for result in results:
            log.info(
                "feed %s: %s, %d new",
                redact_url(result.feed_url), result.status or "unreachable", result.ingested,
            )  # fmt: skip

    def periodic_work(
        self, settings: Settings, dispatcher: JobDispatcher
    ) -> dict[str, PeriodicWork]:
        """What runs every so often: resolving the alerts of entities that went quiet (no
        article re-evaluates them); where the settings turn them on, polling the feeds (every
        period or minute, whichever is shorter; each feed is due once a period), scheduled
        retraining and retention."""
        factory = self.ingestor.factory
        work: dict[str, PeriodicWork] = {SWEEP_WORK: (SWEEP_INTERVAL_S, self.ingestor.sweep)}
        if self.settings.feed_poll_s > 0:
            work[FEEDS_WORK] = (min(self.settings.feed_poll_s, 60.0), self.poll_feeds)
        return {
            **work,
            **retraining(settings, self.settings, factory).work(dispatcher),
            **retention(self.settings.retention_days, factory).work(),
        }

    def close(self) -> None:
        if self.stream_client is not None:
            self.stream_client.close()


def sentiment_router() -> APIRouter:
    from apps.sentiment.api import alerts, articles, dead_letters, entities, feeds, rules, stats

    router = APIRouter(prefix="/v1/sentiment")
    for module in (articles, entities, alerts, rules, feeds, dead_letters, stats):
        router.include_router(module.router)
    return router


def warn_if_lossy(service: SentimentService) -> None:
    """Say at start-up when a Redis restart would lose queued articles."""
    try:
        persistence = service.durability()
    except redis.RedisError as exc:
        log.warning("ingest stream unreachable at start-up: %s", exc)
        return
    if persistence in LOSSY:
        log.warning(
            "the ingest stream's Redis %s: articles queued and not yet scored are lost if it"
            " restarts; run it with --appendonly yes (see the README, Running at scale)",
            LOSSY[persistence],
        )


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
        model = service.ingestor.scorer.model
        app.state.extra_readiness_checks["sentiment_model"] = production_files_check(
            factory,
            service.settings.model_name,
            model.not_serving,
            untrained=(
                "none trained yet: articles wait on the stream, scored once one is"
                if service.stream_client is not None
                else "none trained yet: articles are refused (503) until one is"
            )
            + " (`textsuite train sentiment`, or the job `sentiment.train`)",
        )
        await asyncio.to_thread(model.current)  # loaded now, not by the first article
        app.state.extra_readiness_checks["sentiment_stream"] = service.check_stream
        if service.stream_client is not None:
            await asyncio.to_thread(warn_if_lossy, service)
        await service.alert_feed.start()
        if service.batcher is not None:
            await service.batcher.start()
        try:
            work = service.periodic_work(app.state.settings, app.state.dispatcher)
            async with periodic(app.state.settings, work):
                yield
        finally:
            if service.batcher is not None:
                await service.batcher.stop()
            await service.alert_feed.stop()
            service.close()

    return lifespan
