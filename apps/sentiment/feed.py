"""The live alert feed: one poller per process fans alert changes out to SSE subscribers.

Polling the database (every `interval_s`) works the same whether the alerts were raised in
this process or by stream consumers elsewhere, with SQLite or PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from apps.sentiment.models import Alert
from core.storage.base import utcnow

log = logging.getLogger(__name__)

SUBSCRIBER_BACKLOG = 256  # a subscriber further behind than this loses the oldest changes
OVERLAP = dt.timedelta(seconds=5)


class AlertFeed:
    def __init__(
        self,
        factory: sessionmaker[Session],
        render: Callable[[Alert], dict[str, Any]],
        *,
        interval_s: float = 0.5,
    ) -> None:
        self.factory, self.render, self.interval_s = factory, render, interval_s
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self._cursor: dt.datetime = utcnow()
        self._sent: dict[tuple[uuid.UUID, dt.datetime], dt.datetime] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sentiment-alert-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[asyncio.Queue[dict[str, Any]]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(SUBSCRIBER_BACKLOG)
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)

    async def _run(self) -> None:
        while True:
            try:
                changed = await asyncio.to_thread(self._changes)
            except SQLAlchemyError as exc:  # the database is away: keep trying
                log.warning("alert feed cannot read alerts: %s", exc)
                changed = []
            for alert in changed:
                for queue in list(self._subscribers):
                    if queue.full():
                        queue.get_nowait()
                    queue.put_nowait(alert)
            await asyncio.sleep(self.interval_s)

    def _changes(self) -> list[dict[str, Any]]:
        """Alerts changed since the last poll. The query looks `OVERLAP` further back, since
        a change stamped earlier may commit later (another process, a slow transaction); a
        change already sent is recognised by (id, updated_at) and not sent twice."""
        since = self._cursor - OVERLAP
        with self.factory() as session:
            alerts = session.scalars(
                select(Alert)
                .where(Alert.updated_at >= since)
                .options(selectinload(Alert.entity), selectinload(Alert.rule))
                .order_by(Alert.updated_at)
            ).all()
            fresh = [a for a in alerts if (a.id, a.updated_at) not in self._sent]
            rendered = [self.render(alert) for alert in fresh]
        for alert in fresh:
            self._sent[(alert.id, alert.updated_at)] = alert.updated_at
            self._cursor = max(self._cursor, alert.updated_at)
        horizon = self._cursor - OVERLAP
        self._sent = {key: at for key, at in self._sent.items() if at >= horizon}
        return rendered
