"""Rolling windows per entity: volume, mean score and negative share, against a baseline.

For an entity at time `as_of` (event time: the newest article that touched it), a window of
`window_s` seconds holds its scored articles published in (as_of - window_s, as_of]:
volume, mean score and negative share. The entity's own baseline is the articles of the
`BASELINE_S` before the window, weighted by recency (half-life `HALF_LIFE_S`): its mean and
standard deviation of the score and its article rate.

The articles are read once per entity over the span that all its windows and baselines need
(`read_histories`, one query for many entities); each window is then two slices of them.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from sqlalchemy import and_, case, or_, select
from sqlalchemy.orm import Session

from apps.sentiment.models import Article, ArticleEntity, RuleKind

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
        if kind is RuleKind.VOLUME_SPIKE:
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
    """An entity's scored articles over a span, sorted by publication: any window and its
    baseline inside the span are two slices of it.

    Each window is answered from running sums in O(log n), however long the history: a busy
    company has thousands of articles a week, and a batch asks for a window at each of its
    articles. The recency weights 0.5^((start - t) / HALF_LIFE_S) factor into 2^(t / H) times
    a constant that cancels in the weighted mean and variance, so running sums of 2^(t / H),
    of that times the score and of that times its square answer any baseline.
    """

    def __init__(self, articles: list[ScoredArticle]) -> None:
        self.articles = articles
        self.times = [article.published_at for article in articles]
        origin = self.times[0] if articles else dt.datetime(1970, 1, 1)
        seconds = np.array([(t - origin).total_seconds() for t in self.times], dtype=np.float64)
        scores = np.array([article.score for article in articles], dtype=np.float64)
        negative = np.array([article.label == "negative" for article in articles], dtype=np.float64)
        # Weights grow by 2 per half-life along the span: float64 holds 2^1000 comfortably.
        self._exact = bool(len(seconds)) and seconds[-1] / HALF_LIFE_S > MAX_HALF_LIVES
        growth = np.exp2(seconds / HALF_LIFE_S) if not self._exact else np.ones_like(seconds)
        self._origin = origin
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

    def _slice(self, after: dt.datetime, until: dt.datetime) -> tuple[int, int]:
        """Indexes [i, j) of the articles published in (after, until]."""
        return bisect_right(self.times, after), bisect_right(self.times, until)

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
        rows = self.articles[first:last]
        weights = [
            0.5 ** ((start - row.published_at).total_seconds() / HALF_LIFE_S) for row in rows
        ]
        total = sum(weights)
        mean = sum(w * row.score for w, row in zip(weights, rows, strict=True)) / total
        variance = (
            sum(w * (row.score - mean) ** 2 for w, row in zip(weights, rows, strict=True)) / total
        )
        return mean, math.sqrt(variance)


def read_histories(
    session: Session, spans: Mapping[uuid.UUID, tuple[dt.datetime, dt.datetime]]
) -> dict[uuid.UUID, EntityHistory]:
    """Entity -> its scored articles published in (after, until] of its span; one query per
    `ENTITIES_PER_QUERY` entities, whatever the windows asked of them later."""
    found: dict[uuid.UUID, list[ScoredArticle]] = {entity_id: [] for entity_id in spans}
    entities = list(spans)
    for first in range(0, len(entities), ENTITIES_PER_QUERY):
        chunk = entities[first : first + ENTITIES_PER_QUERY]
        # Each row says whose it is by the entity's place in the chunk: a small integer is
        # cheaper to read back than a UUID, and the history can run to thousands of rows.
        place = case({entity_id: index for index, entity_id in enumerate(chunk)},
                     value=ArticleEntity.entity_id)  # fmt: skip
        rows = session.execute(
            select(place, ArticleEntity.published_at, Article.score, Article.label)
            .join(Article, Article.id == ArticleEntity.article_id)
            .where(
                Article.score.is_not(None),
                or_(
                    *(
                        and_(
                            ArticleEntity.entity_id == entity_id,
                            ArticleEntity.published_at > spans[entity_id][0],
                            ArticleEntity.published_at <= spans[entity_id][1],
                        )
                        for entity_id in chunk
                    )
                ),
            )
            .order_by(ArticleEntity.entity_id, ArticleEntity.published_at)
        )
        for index, published_at, score, label in rows:
            found[chunk[index]].append(ScoredArticle(published_at, score, label))
    return {entity_id: EntityHistory(articles) for entity_id, articles in found.items()}
