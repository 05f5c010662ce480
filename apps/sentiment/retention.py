"""How long articles are kept (`TEXTSUITE_SENTIMENT_RETENTION_DAYS`)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from apps.sentiment.models import AlertRule, Article, LabelCorrection
from apps.sentiment.windows import BASELINE_S
from core.scheduling import Retention
from core.storage.base import utcnow
from core.storage.engine import delete_in_batches

RETENTION_WORK = "sentiment retention"


def kept_since(factory: sessionmaker[Session], before: dt.datetime) -> dt.datetime:
    """`before`, or earlier where the longest alert rule's window and the week of baseline
    before it still read further back: what retention keeps from."""
    with factory() as session:
        longest = session.scalar(select(func.max(AlertRule.window_s))) or 0
    return min(before, utcnow() - dt.timedelta(seconds=longest + BASELINE_S))


def oldest_kept(factory: sessionmaker[Session], days: float) -> dt.datetime | None:
    """The publication time before which retention deletes articles (None: it keeps all)."""
    return kept_since(factory, utcnow() - dt.timedelta(days=days)) if days > 0 else None


def retention(days: float, factory: sessionmaker[Session]) -> Retention:
    """Articles published more than `days` ago go, with their links to companies; the ones
    analysts relabelled stay (they are training data), and so does whatever the longest alert
    rule's window and the week of baseline before it still read. Alerts stay."""

    def purge(before: dt.datetime) -> int:
        before = kept_since(factory, before)
        old = select(Article.id).where(
            Article.published_at < before,
            Article.id.not_in(select(LabelCorrection.article_id)),
        )
        return delete_in_batches(factory, old, Article.__table__)

    return Retention(RETENTION_WORK, days, purge)
