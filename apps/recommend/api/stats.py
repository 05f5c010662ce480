"""`/v1/recommend/stats`: lists served and the feedback tied to them."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field

from apps.recommend.stats import ListTally, recommend_stats
from core.api.deps import (
    ReportSince,
    ReportUntil,
    SessionDep,
    reporting_period,
    scoped_router,
)
from core.storage.models import Scope

router = scoped_router(Scope.RECOMMEND, "recommend: lists")


class ListTallyPublic(BaseModel):
    lists: int = Field(description="Lists served")
    with_feedback: int = Field(description="Lists with at least one event sent with their id")
    feedback_rate: float | None = Field(description="with_feedback / lists (None: none served)")
    events: dict[str, int] = Field(description="Feedback events by type")

    @classmethod
    def of(cls, tally: ListTally) -> ListTallyPublic:
        return cls(
            lists=tally.lists,
            with_feedback=tally.with_feedback,
            feedback_rate=tally.feedback_rate,
            events=dict(tally.events),
        )


class RecommendStatsPublic(BaseModel):
    since: dt.datetime
    until: dt.datetime
    by_kind: dict[str, ListTallyPublic] = Field(description="user, similar, query")
    by_encoder: dict[str, ListTallyPublic] = Field(
        description="By the encoder that ranked the lists: the base model, or a tuned version"
    )


@router.get("/stats", response_model=RecommendStatsPublic, summary="How the lists do")
def read_stats(
    session: SessionDep,
    since: ReportSince = None,
    until: ReportUntil = None,
) -> RecommendStatsPublic:
    """Lists served in [since, until), by kind and by the encoder that ranked them, with the
    feedback events sent with their `recommendation_id` (whenever they came). At most a year
    at a time."""
    since, until = reporting_period(since, until)
    stats = recommend_stats(session, since, until)
    return RecommendStatsPublic(
        since=since,
        until=until,
        by_kind={kind: ListTallyPublic.of(tally) for kind, tally in stats.by_kind.items()},
        by_encoder={name: ListTallyPublic.of(tally) for name, tally in stats.by_encoder.items()},
    )
