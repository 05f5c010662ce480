"""How the recommender plugs into the service: its routes, its state and its refresh loops."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field

import numpy as np
from fastapi import APIRouter, FastAPI
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from apps.recommend.embeddings import EMBED_JOB, SWEEP_WORK, embed_if_pending, load_item_encoder
from apps.recommend.retention import RETENTION_WORK, retention
from apps.recommend.settings import RecommendSettings, get_recommend_settings
from apps.recommend.state import CatalogueState, compute_behaviour
from apps.recommend.training import RETRAIN_WORK, retraining
from core.jobs import JobDispatcher, submit_job
from core.ml.batching import DynamicBatcher, retire_later
from core.ml.references import ModelNotFound
from core.ml.versions import production_files_check
from core.runtime import freeze_long_lived
from core.scheduling import PeriodicWork, periodic
from core.settings import Settings
from core.storage.models import Job, JobStatus

log = logging.getLogger(__name__)


class NoEncoder(RuntimeError):
    """No item encoder can be loaded yet (nothing is embedded)."""


@dataclass
class RecommendService:
    settings: Settings
    recommend: RecommendSettings
    factory: sessionmaker[Session]
    state: CatalogueState
    dispatcher: JobDispatcher | None = None
    _behaviour_pool: ProcessPoolExecutor | None = field(default=None, repr=False)
    # The query encoder behind the serving batcher: (encoder key, batcher), swapped when the
    # catalogue moves to another encoder.
    _queries: tuple[str, DynamicBatcher[str]] | None = field(default=None, repr=False)
    _queries_lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    _retiring: set[asyncio.Task[None]] = field(default_factory=set, repr=False)

    @classmethod
    def create(
        cls,
        settings: Settings,
        recommend: RecommendSettings,
        factory: sessionmaker[Session],
        dispatcher: JobDispatcher | None = None,
    ) -> RecommendService:
        return cls(
            settings, recommend, factory, CatalogueState(settings, recommend, factory), dispatcher
        )

    def refresh(self) -> bool:
        return self.state.refresh()

    async def query_vector(self, text: str) -> np.ndarray:
        """The query embedded by the encoder that embedded the catalogue, through the serving
        batcher (concurrent queries share model calls; a full queue answers 503)."""
        choice = self.state.encoder
        if choice is None:
            raise NoEncoder("the catalogue has no embeddings yet: add items and wait for the job")
        queries = self._queries
        if queries is None or queries[0] != choice.key:
            async with self._queries_lock:  # one load and one batcher per encoder
                queries = self._queries
                if queries is None or queries[0] != choice.key:
                    encoder = await asyncio.to_thread(load_item_encoder, self.settings, choice)
                    batcher = DynamicBatcher.for_predictor(
                        encoder, self.settings.batching(), name="recommend-query"
                    )
                    await batcher.start()
                    earlier, self._queries = self._queries, (choice.key, batcher)
                    queries = self._queries
                    if earlier is not None:  # answers what it holds, then stops
                        retire_later(earlier[1], self._retiring)
        return await queries[1].submit(text)  # queued before anything can replace it

    async def stop_queries(self) -> None:
        if self._queries is not None:
            await self._queries[1].stop()
            self._queries = None
        if self._retiring:
            await asyncio.wait(self._retiring)

    def request_embedding(self) -> str | None:
        """Start the embedding job for new or changed items; returns its id."""
        if self.dispatcher is None:
            return None
        # A job not started yet embeds every item pending when it starts, these included:
        # sixty updates in a burst make one job, not sixty.
        with self.factory() as session:
            waiting = session.scalar(
                select(Job.id)
                .where(Job.kind == EMBED_JOB, Job.status == JobStatus.QUEUED)
                .order_by(Job.created_at.desc())
                .limit(1)
            )
        if waiting is not None:
            return str(waiting)
        # The items are stored already, and a retry would find them unchanged and ask for
        # nothing: so the job waits for the broker rather than failing.
        job, _ = submit_job(
            self.factory, self.dispatcher, EMBED_JOB, {}, dispatch_later_if_down=True
        )
        return str(job.id)

    async def refresh_forever(self) -> None:
        since_behaviour = float("inf")
        while True:
            try:
                changed = await asyncio.to_thread(self.state.refresh)
                if since_behaviour >= self.recommend.behaviour_refresh_s:
                    await self.refresh_behaviour()
                    since_behaviour, changed = 0.0, True
                if changed:
                    # What was just loaded lives until the next change: keep the collector's
                    # full passes (which stall every request) from walking it.
                    freeze_long_lived()
            except (SQLAlchemyError, ModelNotFound, OSError) as exc:
                log.warning("recommender refresh failed: %s", exc)
            await asyncio.sleep(self.recommend.refresh_s)
            since_behaviour += self.recommend.refresh_s

    async def refresh_behaviour(self) -> None:
        """Recompute behaviour: in a separate process when `behaviour_process` is on and the
        database can be reached from one (not an in-memory SQLite)."""
        url = self.settings.database_url
        if not self.recommend.behaviour_process or ":memory:" in url or url == "sqlite://":
            await asyncio.to_thread(self.state.refresh_behaviour)
            return
        if self._behaviour_pool is None:
            # spawn, not fork: the serving process has threads (and maybe CUDA) that a forked
            # child must not inherit.
            context = multiprocessing.get_context("spawn")
            self._behaviour_pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=context,
                initializer=exit_with_parent,
                initargs=(os.getpid(),),
            )
        loop = asyncio.get_running_loop()
        try:
            behaviour = await loop.run_in_executor(
                self._behaviour_pool, compute_behaviour, url, self.recommend
            )
        except BrokenProcessPool:
            log.warning("the behaviour process died; starting a new one next time")
            self._behaviour_pool = None
            return
        self.state.set_behaviour(behaviour)

    def close(self) -> None:
        if self._behaviour_pool is not None:
            self._behaviour_pool.shutdown(wait=True, cancel_futures=True)
            self._behaviour_pool = None


def exit_with_parent(parent: int) -> None:
    """In a helper process: exit as soon as `parent` is gone (killed, say), instead of living
    on as an orphan that holds its memory."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


PERIODIC_WORK = (RETRAIN_WORK, RETENTION_WORK, SWEEP_WORK)  # every piece there is, on or off


def periodic_work(
    recommend: RecommendSettings, factory: sessionmaker[Session], dispatcher: JobDispatcher
) -> dict[str, PeriodicWork]:
    """The recommender's periodic work that its settings turn on: scheduled retraining of the
    encoder, retention of served lists, the sweep for items left without a vector. (Its index
    refresh is per process, not in here.)"""
    sweep: dict[str, PeriodicWork] = {}
    if recommend.embed_sweep_s > 0:
        check = functools.partial(embed_if_pending, recommend, factory, dispatcher)
        sweep[SWEEP_WORK] = (recommend.embed_sweep_s, check)
    return {
        **retraining(recommend, factory).work(dispatcher),
        **retention(recommend.list_retention_days, factory).work(),
        **sweep,
    }


def recommend_router() -> APIRouter:
    from apps.recommend.api import catalogue, events, lists, stats

    router = APIRouter(prefix="/v1/recommend")
    for module in (lists, catalogue, events, stats):
        router.include_router(module.router)
    return router


def recommend_lifespan(
    recommend: RecommendSettings | None = None,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """An app lifespan (for `core.api.create_app(lifespans=...)`)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = RecommendService.create(
            app.state.settings,
            recommend or get_recommend_settings(),
            app.state.session_factory,
            app.state.dispatcher,
        )
        app.state.recommend = service
        app.state.extra_readiness_checks["recommend_model"] = production_files_check(
            app.state.session_factory,
            service.recommend.model_name,
            untrained="none tuned yet: items are embedded with the base encoder",
        )
        refresher = asyncio.create_task(service.refresh_forever(), name="recommend-refresh")
        work = periodic_work(service.recommend, app.state.session_factory, app.state.dispatcher)
        try:
            async with periodic(app.state.settings, work):
                yield
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            await service.stop_queries()
            service.close()

    return lifespan
