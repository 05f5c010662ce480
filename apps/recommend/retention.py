"""How long served lists are kept (`TEXTSUITE_RECOMMEND_LIST_RETENTION_DAYS`)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from apps.recommend.models import Recommendation
from core.scheduling import Retention
from core.storage.engine import delete_in_batches

RETENTION_WORK = "recommender retention"


def retention(days: float, factory: sessionmaker[Session]) -> Retention:
    """Lists served more than `days` ago go (the log grows by one row per request); events
    stay, and feedback sent with such a list's id is refused as unknown from then on."""

    def purge(before: dt.datetime) -> int:
        old = select(Recommendation.id).where(Recommendation.created_at < before)
        return delete_in_batches(factory, old, Recommendation.__table__)

    return Retention(RETENTION_WORK, days, purge)
