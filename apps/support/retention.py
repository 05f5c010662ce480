"""How long conversations are kept (`TEXTSUITE_SUPPORT_RETENTION_DAYS`)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from apps.support.models import Conversation
from core.scheduling import Retention
from core.storage.engine import delete_in_batches

RETENTION_WORK = "support retention"


def retention(days: float, factory: sessionmaker[Session]) -> Retention:
    """Conversations nobody wrote in for `days` go, with their messages and review items (the
    examples reviewers labelled stay in the catalogue); customer records stay."""

    def purge(before: dt.datetime) -> int:
        idle = select(Conversation.id).where(Conversation.updated_at < before)
        return delete_in_batches(factory, idle, Conversation.__table__)

    return Retention(RETENTION_WORK, days, purge)
