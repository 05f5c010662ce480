"""How long articles are kept (`TEXTSUITE_SENTIMENT_RETENTION_DAYS`)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from apps.sentiment.models import Article, LabelCorrection
from core.scheduling import Retention
from core.storage.engine import delete_in_batches

RETENTION_WORK = "sentiment retention"


def retention(days: float, factory: sessionmaker[Session]) -> Retention:
    """Articles published more than `days` ago go, with their links to companies; the ones
    analysts relabelled stay (they are training data). Alerts stay."""

    def purge(before: dt.datetime) -> int:
        old = select(Article.id).where(
            Article.published_at < before,
            Article.id.not_in(select(LabelCorrection.article_id)),
        )
        return delete_in_batches(factory, old, Article.__table__)

    return Retention(RETENTION_WORK, days, purge)
