"""`TEXTSUITE_RECOMMEND_LIST_RETENTION_DAYS`: old served lists go, events stay."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from apps.recommend.catalogue import ItemIn, upsert_items
from apps.recommend.events import EventIn, record_events
from apps.recommend.models import Interaction, Recommendation, RecommendationKind
from apps.recommend.retention import retention
from core.storage.engine import session_scope


def test_served_lists_past_the_retention_go_and_their_feedback_stays(
    session_factory: sessionmaker[Session],
) -> None:
    now = dt.datetime.now(dt.UTC)
    with session_scope(session_factory) as session:
        upsert_items(session, [ItemIn(external_id="T1", title="Storm tent")])
        old = Recommendation(
            kind=RecommendationKind.USER,
            items=[["T1", 0.9]],
            created_at=now - dt.timedelta(days=100),
        )
        recent = Recommendation(kind=RecommendationKind.QUERY, created_at=now)
        session.add_all([old, recent])
        session.flush()
        old_id, recent_id = old.id, recent.id
        record_events(session, [EventIn(event_id="e1", user_id="u1", item_id="T1", type="click",
                                        timestamp=now, recommendation_id=old_id)])  # fmt: skip
    assert retention(90, session_factory).run() == 1
    with session_factory() as session:
        assert session.scalars(select(Recommendation.id)).all() == [recent_id]
        [event] = session.scalars(select(Interaction)).all()
    assert event.recommendation_id is None  # the event stays, its list is gone
