"""Rolling windows per entity: volume, mean score and negative share, against a baseline.

For an entity at time `as_of` (event time: the newest article that touched it), a window of
`window_s` seconds holds its scored articles published in (as_of - window_s, as_of]:
volume, mean score and negative share. The entity's own baseline is the articles of the
`BASELINE_S` before the window, weighted by recency (half-life `HALF_LIFE_S`): its mean and
standard deviation of the score and its article rate.

The articles are read once per entity over the span that all its windows and baselines need
(`read_histories`, one query for many entities); each window is then two slices of them.
A long-running ingestor keeps what it read (`HistoryCache`) and reads only what was scored
since, so a batch costs the same whether its companies have ten articles a week or ten
thousand.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from sqlalchemy import ColumnElement, and_, case, or_, select
from sqlalchemy.orm import Session

from apps.sentiment.models import Article, ArticleEntity, RuleKind
from core.storage.base import utcnow

BASELINE_S = 7 * 24 * 3600
HALF_LIFE_S = 24 * 3600
MIN_BASELINE = 10
SD_FLOOR = 0.1  # a baseline of identical scores still leaves room for noise
MAX_HALF_LIVES = 900  # longer spans are weighted article by article (2^1024 overflows)
# Entities per query when reading scored articles: each adds a term to one OR, and SQLite
# refuses expressions nested deeper than 1,000.
ENTITIES_PER_QUERY = 100


@dataclass(frozen=True)
class WindowStats:
    start: dt.datetime
    end: dt.datetime
    volume: int
    mean_score: float | None
    negative_share: float | None
    baseline_count: int
    baseline_mean: float | None
    baseline_sd: float | None
    expected_volume: float

    def value(self, kind: RuleKind) -> float | None:
        """What a rule of `kind` compares with its threshold (None: cannot tell yet)."""
        if kind is RuleKind.NEGATIVE_SHARE:
            return self.negative_share
        if kind is RuleKind.VOLUME_SPIKE:  # against a week that says what usual is
            if self.baseline_count < MIN_BASELINE:
                return None
            return self.volume / max(self.expected_volume, 1.0)
        if self.mean_score is None or self.baseline_count < MIN_BASELINE:
            return None
        assert self.baseline_mean is not None and self.baseline_sd is not None
        error = max(self.baseline_sd, SD_FLOOR) / math.sqrt(self.volume)
        return (self.mean_score - self.baseline_mean) / error


def window_stats(
    session: Session, entity_id: uuid.UUID, as_of: dt.datetime, window_s: int
) -> WindowStats:
    start = as_of - dt.timedelta(seconds=window_s)
    span = (start - dt.timedelta(seconds=BASELINE_S), as_of)
    return read_histories(session, {entity_id: span})[entity_id].stats(as_of, window_s)


@dataclass(frozen=True)
class ScoredArticle:
    published_at: dt.datetime
    score: float
    label: str | None


class EntityHistory:
    """An entity's scored articles, sorted by publication: any window and its baseline are two
    slices of them. Articles outside the span a caller asked for may be there too; no window
    looks past its own slice.

    Each window is answered from running sums in O(log n), however long the history: a busy
    company has thousands of articles a week, and a batch asks for a window at each of its
    articles. The recency weights 0.5^((start - t) / HALF_LIFE_S) factor into 2^(t / H) times
    a constant that cancels in the weighted mean and variance, so running sums of 2^(t / H),
    of that times the score and of that times its square answer any baseline.
    """

    def __init__(self, rows: np.ndarray) -> None:
        """From (N, 3) rows (see `rows_of`) in any order."""
        rows = rows[np.argsort(rows[:, 0], kind="stable")] if len(rows) else np.zeros((0, 3))
        seconds, scores, negative = rows[:, 0], rows[:, 1], rows[:, 2]
        self.rows = rows
        self.seconds = seconds
        origin = seconds[0] if len(seconds) else 0.0
        # Weights grow by 2 per half-life along the span: float64 holds 2^1000 comfortably.
        span_half_lives = (seconds[-1] - origin) / HALF_LIFE_S if len(seconds) else 0.0
        self._exact = bool(span_half_lives > MAX_HALF_LIVES)
        growth = (
            np.exp2((seconds - origin) / HALF_LIFE_S) if not self._exact else np.ones_like(seconds)
        )
        self._sums = {
            name: np.concatenate(([0.0], np.cumsum(values)))
            for name, values in {
                "score": scores,
                "negative": negative,
                "weight": growth,
                "weighted_score": growth * scores,
                "weighted_square": growth * scores * scores,
            }.items()
        }

    @classmethod
    def of(cls, articles: Iterable[ScoredArticle]) -> EntityHistory:
        return cls(rows_of(articles))

    def __len__(self) -> int:
        return len(self.seconds)

    def between(self, after: dt.datetime, until: dt.datetime) -> np.ndarray:
        """The (N, 3) rows published in (after, until], oldest first."""
        first, last = self._slice(after, until)
        return self.rows[first:last]

    def _slice(self, after: dt.datetime, until: dt.datetime) -> tuple[int, int]:
        """Indexes [i, j) of the articles published in (after, until]."""
        first, last = np.searchsorted(self.seconds, [after.timestamp(), until.timestamp()], "right")
        return int(first), int(last)

    def _total(self, name: str, first: int, last: int) -> float:
        sums = self._sums[name]
        return float(sums[last] - sums[first])

    def stats(self, as_of: dt.datetime, window_s: int) -> WindowStats:
        start = as_of - dt.timedelta(seconds=window_s)
        first, last = self._slice(start, as_of)
        volume = last - first
        mean = self._total("score", first, last) / volume if volume else None
        negative = self._total("negative", first, last) / volume if volume else None
        past_first, past_last = self._slice(start - dt.timedelta(seconds=BASELINE_S), start)
        history = past_last - past_first
        baseline_mean = baseline_sd = None
        if history and self._exact:
            baseline_mean, baseline_sd = self._weighted(start, past_first, past_last)
        elif history:
            total = self._total("weight", past_first, past_last)
            baseline_mean = self._total("weighted_score", past_first, past_last) / total
            square = self._total("weighted_square", past_first, past_last) / total
            baseline_sd = math.sqrt(max(square - baseline_mean * baseline_mean, 0.0))
        # The rate the baseline predicts for a window this long (history spans BASELINE_S).
        expected = history * window_s / BASELINE_S if history else 0.0
        return WindowStats(
            start, as_of, volume, mean, negative, history, baseline_mean, baseline_sd, expected
        )

    def _weighted(self, start: dt.datetime, first: int, last: int) -> tuple[float, float]:
        """The recency-weighted mean and deviation, one article at a time (a span too long
        for running sums of the weights: years of replayed news)."""
        seconds = self.seconds[first:last]
        scores = self.rows[first:last, 1]
        weights = [0.5 ** ((start.timestamp() - t) / HALF_LIFE_S) for t in seconds.tolist()]
        total = sum(weights)
        mean = sum(w * x for w, x in zip(weights, scores.tolist(), strict=True)) / total
        variance = (
            sum(w * (x - mean) ** 2 for w, x in zip(weights, scores.tolist(), strict=True)) / total
        )
        return mean, math.sqrt(variance)


def row_of(article: ScoredArticle) -> tuple[float, float, float]:
    return (article.published_at.timestamp(), article.score, float(article.label == "negative"))


def rows_of(articles: Iterable[ScoredArticle]) -> np.ndarray:
    """(N, 3) float64: publication time (epoch seconds), score, 1.0 if negative."""
    return np.array([row_of(article) for article in articles], dtype=np.float64).reshape(-1, 3)


Span = tuple[dt.datetime, dt.datetime]  # (after, until]: published in this range


def read_histories(
    session: Session, spans: Mapping[uuid.UUID, Span]
) -> dict[uuid.UUID, EntityHistory]:
    """Entity -> its scored articles published in (after, until] of its span; one query per
    `ENTITIES_PER_QUERY` entities, whatever the windows asked of them later."""
    return {
        entity_id: _history_of(found) for entity_id, found in _read_scored(session, spans).items()
    }


def _until(until: dt.datetime | None) -> list[ColumnElement[bool]]:
    return [] if until is None else [ArticleEntity.published_at <= until]


@dataclass(frozen=True)
class _Row:
    article: ScoredArticle
    scored_at: dt.datetime | None


def _history_of(found: Mapping[uuid.UUID, _Row]) -> EntityHistory:
    return EntityHistory(rows_of(row.article for row in found.values()))


def _read_scored(
    session: Session, spans: Mapping[uuid.UUID, tuple[dt.datetime, dt.datetime | None]]
) -> dict[uuid.UUID, dict[uuid.UUID, _Row]]:
    """Entity -> article id -> its scored article and when it was scored; published in
    (after, until], or after `after` where `until` is None."""
    found: dict[uuid.UUID, dict[uuid.UUID, _Row]] = {entity_id: {} for entity_id in spans}
    entities = list(spans)
    for first in range(0, len(entities), ENTITIES_PER_QUERY):
        chunk = entities[first : first + ENTITIES_PER_QUERY]
        # Each row says whose it is by the entity's place in the chunk: a small integer is
        # cheaper to read back than a UUID, and the history can run to thousands of rows.
        place = case({entity_id: index for index, entity_id in enumerate(chunk)},
                     value=ArticleEntity.entity_id)  # fmt: skip
        rows = session.execute(
            select(
                place,
                ArticleEntity.article_id,
                ArticleEntity.published_at,
                Article.score,
                Article.label,
                Article.scored_at,
            )
            .join(Article, Article.id == ArticleEntity.article_id)
            .where(
                Article.score.is_not(None),
                or_(
                    *(
                        and_(
                            ArticleEntity.entity_id == entity_id,
                            ArticleEntity.published_at > spans[entity_id][0],
                            *_until(spans[entity_id][1]),
                        )
                        for entity_id in chunk
                    )
                ),
            )
        )
        for index, article_id, published_at, score, label, scored_at in rows:
            found[chunk[index]][article_id] = _Row(
                ScoredArticle(published_at, score, label), scored_at
            )
    return found


@dataclass
class _Kept:
    """What the cache holds of one entity: every scored article published after `after` and
    scored up to `settled`, as rows (see `rows_of`) by article id, and their history."""

    after: dt.datetime
    settled: dt.datetime
    loaded: dt.datetime
    rows: dict[uuid.UUID, tuple[float, float, float]]
    history: EntityHistory | None = None

    def current(self) -> EntityHistory:
        if self.history is None:
            self.history = EntityHistory(
                np.array(list(self.rows.values()), dtype=np.float64).reshape(-1, 3)
            )
        return self.history


class HistoryCache:
    """Entity histories kept between batches by one long-running ingestor. Thread-safe.

    The first read of an entity reads its whole span, as `read_histories` does. Later reads
    take only the articles scored since (one indexed query on `scored_at`, whatever the
    entities) and add them to what is kept; kept articles published before the span asked for
    are dropped now and then (`PRUNE_S`), and no window looks at them meanwhile. Another
    writer's articles are seen once committed: articles scored in the last `settle_s` seconds
    are read again on every call instead of being kept, so a transaction committing up to
    `settle_s` after it scored is not missed, and rows of a transaction that rolled back never
    stay. Every `refresh_s` an entity is read whole again (which also brings in anything
    committed later than that), an entity not read for `gap_s` too, and `clear()` (the
    watchlist changed, so links to old articles may have been added) forgets everything.
    """

    PRUNE_S = 3600.0

    def __init__(
        self,
        *,
        settle_s: float = 5.0,
        refresh_s: float = 120.0,
        gap_s: float = 10.0,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.settle = dt.timedelta(seconds=settle_s)
        self.refresh = dt.timedelta(seconds=refresh_s)
        self.gap = dt.timedelta(seconds=gap_s)
        self.clock = clock
        self._kept: dict[uuid.UUID, _Kept] = {}
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()

    def read(
        self, session: Session, spans: Mapping[uuid.UUID, Span]
    ) -> dict[uuid.UUID, EntityHistory]:
        """Entity -> a history holding at least its scored articles published in its span."""
        now = self.clock()
        settle_until = now - self.settle
        with self._lock:
            kept = {
                entity_id: self._kept[entity_id]
                for entity_id, (after, _) in spans.items()
                if entity_id in self._kept and self._usable(self._kept[entity_id], after, now)
            }
        # Read whole with no end: what is kept must hold everything published after `after`,
        # and the catch-up reads bring only what is scored later. A span ending hours back
        # (a replayed article's batch) would otherwise leave out, for every later batch,
        # the articles published since then and scored before.
        whole = {
            entity_id: (after, None)
            for entity_id, (after, _) in spans.items()
            if entity_id not in kept
        }
        histories: dict[uuid.UUID, EntityHistory] = {}
        loaded: dict[uuid.UUID, _Kept] = {}
        for entity_id, found in _read_scored(session, whole).items():
            histories[entity_id] = _history_of(found)
            loaded[entity_id] = _Kept(
                after=spans[entity_id][0],
                settled=settle_until,
                loaded=now,
                rows={
                    article_id: row_of(row.article)
                    for article_id, row in found.items()
                    if row.scored_at is None or row.scored_at <= settle_until
                },
            )
        if kept:
            since = min(entry.settled for entry in kept.values())
            recent = self._scored_since(session, since, set(kept))
            with self._lock:
                for entity_id, entry in kept.items():
                    histories[entity_id] = self._update(
                        entry, recent.get(entity_id, {}), spans[entity_id][0], settle_until
                    )
        with self._lock:
            self._kept.update(loaded)
        return histories

    def _update(
        self,
        entry: _Kept,
        recent: dict[uuid.UUID, _Row],
        after: dt.datetime,
        settle_until: dt.datetime,
    ) -> EntityHistory:
        """Keep what settled, prune now and then; the history with the unsettled rows too."""
        unsettled = []
        for article_id, row in recent.items():
            if row.scored_at is not None and row.scored_at > settle_until:
                if article_id not in entry.rows:
                    unsettled.append(row_of(row.article))
            elif row.scored_at is not None and row.scored_at > entry.settled:
                entry.rows[article_id] = row_of(row.article)
                entry.history = None
        entry.settled = max(entry.settled, settle_until)
        if (after - entry.after).total_seconds() > self.PRUNE_S:
            cutoff = after.timestamp()
            entry.rows = {key: row for key, row in entry.rows.items() if row[0] > cutoff}
            entry.after, entry.history = after, None
        history = entry.current()
        if not unsettled:
            return history
        return EntityHistory(np.concatenate((history.rows, np.array(unsettled))))

    def _usable(self, entry: _Kept, after: dt.datetime, now: dt.datetime) -> bool:
        """Whether `entry` plus what was scored since it settled answers a span from `after`.

        Not when it starts later, when it is due for a whole read, or when it has not been
        read for `gap_s`: the catch-up read takes what every company had scored since the
        oldest entry it serves, so one company read a while ago would make every batch read
        all the news of that while; such a company is read whole instead (its own week).
        """
        return (
            entry.after <= after
            and now - entry.loaded < self.refresh
            and now - entry.settled <= self.gap
        )

    @staticmethod
    def _scored_since(
        session: Session, since: dt.datetime, entities: set[uuid.UUID]
    ) -> dict[uuid.UUID, dict[uuid.UUID, _Row]]:
        """Entity -> article id -> row, for the articles scored after `since` (any entity in
        `entities`); driven by the index on `scored_at`, so it reads only recent articles."""
        found: dict[uuid.UUID, dict[uuid.UUID, _Row]] = {}
        rows = session.execute(
            select(
                ArticleEntity.entity_id,
                Article.id,
                ArticleEntity.published_at,
                Article.score,
                Article.label,
                Article.scored_at,
            )
            .join(ArticleEntity, ArticleEntity.article_id == Article.id)
            .where(Article.scored_at > since, Article.score.is_not(None))
        )
        for entity_id, article_id, published_at, score, label, scored_at in rows:
            if entity_id in entities:
                found.setdefault(entity_id, {})[article_id] = _Row(
                    ScoredArticle(published_at, score, label), scored_at
                )
        return found
