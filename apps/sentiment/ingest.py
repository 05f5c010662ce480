"""Every ingest path ends here: store each article once, link entities, score, commit."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from apps.sentiment.alerts import (
    AlertChange,
    evaluate_entities,
    stale_open_alerts,
    touched_entities,
)
from apps.sentiment.articles import ArticleIn, store_articles
from apps.sentiment.entities import EntityMatcher, load_matcher
from apps.sentiment.models import Article, Entity
from apps.sentiment.scoring import SentimentScorer
from apps.sentiment.windows import HistoryCache
from core.metrics import SENTIMENT_ALERT_CHANGES, SENTIMENT_ARTICLES
from core.storage.base import utcnow
from core.storage.engine import session_scope

log = logging.getLogger(__name__)

# A transaction that lost a race to a concurrent writer is retried (then it finds theirs).
CONFLICT_ATTEMPTS = 3
T = TypeVar("T")


@dataclass(frozen=True)
class Ingested:
    """What became of one delivered article."""

    article_id: uuid.UUID
    duplicate: bool
    label: str | None
    score: float | None


class Ingestor:
    """Stores, links and scores batches of articles in one transaction each. Thread-safe."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        scorer: SentimentScorer,
        *,
        on_alerts: Callable[[list[AlertChange]], object] | None = None,
    ) -> None:
        """`on_alerts` hears of alerts that opened, fired or resolved, once committed."""
        self.factory, self.scorer, self.on_alerts = factory, scorer, on_alerts
        self._matcher: EntityMatcher | None = None
        self._watchlist_state: tuple[int, object] | None = None
        self._lock = threading.Lock()
        # Alert windows read each company's week of articles; kept between batches.
        self.histories = HistoryCache()

    def ingest(self, items: Sequence[ArticleIn]) -> list[Ingested]:
        if not items:
            return []
        self.scorer.served()  # no model: refuse before storing anything
        results, changes = _retrying(lambda: self._ingest(items))
        duplicates = sum(r.duplicate for r in results)
        SENTIMENT_ARTICLES.labels("duplicate").inc(duplicates)
        SENTIMENT_ARTICLES.labels("stored").inc(len(results) - duplicates)
        self._announce(changes)
        return results

    def sweep(self, now: dt.datetime | None = None) -> list[AlertChange]:
        """Re-evaluate entities with open alerts at `now`, so quiet ones resolve."""

        def run() -> list[AlertChange]:
            with session_scope(self.factory) as session:
                self.matcher(session)  # a changed watchlist clears the kept histories
                stale = stale_open_alerts(session, now or utcnow())
                return evaluate_entities(
                    session,
                    {entity_id: [as_of] for entity_id, as_of in stale},
                    self.histories,
                )

        changes = _retrying(run)
        self._announce(changes)
        return changes

    def _announce(self, changes: list[AlertChange]) -> None:
        for change in changes:
            SENTIMENT_ALERT_CHANGES.labels(change.state.value).inc()
        if changes and self.on_alerts is not None:
            self.on_alerts(changes)

    def _ingest(self, items: Sequence[ArticleIn]) -> tuple[list[Ingested], list[AlertChange]]:
        with session_scope(self.factory) as session:
            stored = store_articles(session, items, self.matcher(session))
            ids = {s.article_id for s in stored}
            # Every article of the batch, not only the new ones: one stored without a score
            # (however that came about) is scored the next time it is delivered.
            self.scorer.score_unscored(session, list(ids))
            changes = evaluate_entities(
                session, touched_entities(session, ids, utcnow()), self.histories
            )
            scores = {
                article_id: (label, score)
                for article_id, label, score in session.execute(
                    select(Article.id, Article.label, Article.score).where(Article.id.in_(ids))
                )
            }
            results = [
                Ingested(
                    s.article_id,
                    duplicate=not s.created,
                    label=scores[s.article_id][0],
                    score=scores[s.article_id][1],
                )
                for s in stored
            ]
            return results, changes

    def matcher(self, session: Session) -> EntityMatcher:
        """The watchlist matcher, rebuilt only when the watchlist has changed."""
        state = tuple(
            session.execute(select(func.count(Entity.id), func.max(Entity.updated_at))).one()
        )
        with self._lock:
            if self._matcher is None or state != self._watchlist_state:
                self._matcher, self._watchlist_state = load_matcher(session), state
                # A company added or given new aliases is linked to older articles too.
                self.histories.clear()
            return self._matcher


def _retrying(transaction: Callable[[], T]) -> T:
    """Run `transaction`, again when another worker stored the same row first (the unique
    constraints refuse ours; looking again finds theirs)."""
    for attempt in range(1, CONFLICT_ATTEMPTS + 1):
        try:
            return transaction()
        except IntegrityError:
            if attempt == CONFLICT_ATTEMPTS:
                raise
            log.info("a concurrent writer stored the same article or alert first; retrying")
    raise AssertionError("unreachable")
