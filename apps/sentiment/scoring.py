"""Finance sentiment scores: negative / neutral / positive and score = P(pos) - P(neg)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from apps.sentiment.articles import article_text
from apps.sentiment.models import Article
from core.ml.serving import ProductionClassifier, ServedVersion, ServingBatcher
from core.ml.versions import still_production
from core.storage.base import utcnow
from core.storage.engine import session_scope
from core.validation import PastDatetime

RESCORE_JOB = "sentiment.rescore"

LABELS = ("negative", "neutral", "positive")


class RescoreParams(BaseModel):
    """Parameters of a `sentiment.rescore` job."""

    model_config = ConfigDict(extra="forbid")

    since: PastDatetime | None = Field(
        default=None, description="Only articles published at or after this time."
    )


class NoSentimentModel(RuntimeError):
    """No production version of the sentiment model yet."""


@dataclass(frozen=True)
class Score:
    label: str
    probabilities: dict[str, float]
    score: float  # P(positive) - P(negative), in [-1, 1]


def scores_from_probabilities(probabilities: np.ndarray, labels: Sequence[str]) -> list[Score]:
    """(N, C) probabilities over `labels` (which must include the three sentiment labels)."""
    missing = [label for label in LABELS if label not in labels]
    if missing:
        raise ValueError(f"a sentiment model must predict {LABELS}; missing {missing}")
    positive, negative = labels.index("positive"), labels.index("negative")
    scores = []
    for row in np.asarray(probabilities, dtype=np.float64):  # (C,)
        scores.append(
            Score(
                label=labels[int(row.argmax())],
                probabilities={
                    label: round(float(p), 6) for label, p in zip(labels, row, strict=True)
                },
                score=round(float(row[positive] - row[negative]), 6),
            )
        )
    return scores


class SentimentScorer:
    """Scores stored articles with the production sentiment model."""

    def __init__(self, model: ProductionClassifier, batcher: ServingBatcher | None = None) -> None:
        """`batcher`: where the API process sends the texts, to share model calls with
        concurrent requests; without one (workers, jobs), each batch calls the model."""
        self.model = model
        self.batcher = batcher

    def served(self) -> ServedVersion:
        served = self.model.current()
        if served is None:
            raise NoSentimentModel(
                f"no production version of {self.model.name!r}: train one with "
                "`textsuite train sentiment`, or over HTTP `POST /v1/jobs` with the kind "
                "`sentiment.train`"
            )
        return served

    def score_unscored(self, session: Session, article_ids: Sequence[uuid.UUID]) -> int:
        """Score those of `article_ids` that have no score yet; returns how many were scored."""
        articles = session.execute(
            select(Article.id, Article.title, Article.body).where(
                Article.id.in_(article_ids), Article.score.is_(None)
            )
        ).all()
        return self._score(session, articles)

    def rescore_others(
        self,
        factory: sessionmaker[Session],
        *,
        since: dt.datetime | None = None,
        batch: int = 256,
        progress: Callable[[float, str | None], None] | None = None,
    ) -> tuple[int, int]:
        """Score again, with the production version, the stored articles (published at or
        after `since`) that another version scored (an older one, or after a rollback the one
        rolled back; or none recorded); returns (how many, the version used). One pass in id
        order, each batch committed, so a stopped run keeps what it did. Each batch is written
        only while its version is still production, holding a shared lock on the version's row
        until the batch commits (PostgreSQL), so a promotion or a rollback waits for the batch
        in flight and the run stops after it (a run for the new one takes over) rather than
        write over its scores.
        Alerts already raised stay as they were: they were right about what was known then."""
        served = self.served()
        older = Article.score.is_not(None) & (
            Article.model_version_id.is_(None) | (Article.model_version_id != served.version_id)
        )
        if since is not None:
            older &= Article.published_at >= since
        with factory() as session:
            total = session.scalar(select(func.count(Article.id)).where(older)) or 0
        done, after = 0, None
        while True:
            page = older if after is None else older & (Article.id > after)
            with session_scope(factory) as session:
                if not still_production(session, served.version_id):
                    break  # promoted or rolled back meanwhile
                articles = session.execute(
                    select(Article.id, Article.title, Article.body)
                    .where(page)
                    .order_by(Article.id)
                    .limit(batch)
                ).all()
                if not articles:
                    break
                done += self._score(session, articles, served)
            after = articles[-1].id
            if progress is not None:
                progress(min(done / max(total, 1), 1.0), f"{done} of {total} articles scored again")
        return done, served.version

    def _score(
        self, session: Session, articles: Sequence[Any], served: ServedVersion | None = None
    ) -> int:
        if not articles:
            return 0
        served = served or self.served()
        texts = [article_text(a.title, a.body) for a in articles]
        if self.batcher is not None:
            probabilities = self.batcher.predict(served, texts)  # (N, C)
        else:
            probabilities = served.classifier.predict_proba(texts)  # length-sorted batches
        results = scores_from_probabilities(probabilities, served.classifier.labels)
        now = utcnow()
        # One UPDATE by primary key, run for every row (executemany); no objects to track.
        session.execute(
            update(Article),
            [
                {
                    "id": article.id,
                    "label": result.label,
                    "probabilities": result.probabilities,
                    "score": result.score,
                    "model_version_id": served.version_id,
                    "scored_at": now,
                }
                for article, result in zip(articles, results, strict=True)
            ],
        )
        return len(articles)
