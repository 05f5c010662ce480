"""`/v1/sentiment/stats`: articles and how the model read them, analysts' corrections, alerts."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field

from apps.sentiment.stats import VersionTally, sentiment_stats
from core.api.deps import (
    ReportSince,
    ReportUntil,
    SessionDep,
    reporting_period,
    scoped_router,
)
from core.storage.models import Scope

router = scoped_router(Scope.SENTIMENT, "sentiment")


class VersionTallyPublic(BaseModel):
    articles: int = Field(description="Articles this version scored")
    labels: dict[str, int]
    corrected: int = Field(description="Of those, relabelled by an analyst to another label")
    correction_rate: float | None = Field(description="corrected / articles")
    corrections: dict[str, int] = Field(description='"model label -> analyst label": how many')

    @classmethod
    def of(cls, tally: VersionTally) -> VersionTallyPublic:
        return cls(
            articles=tally.articles,
            labels=dict(tally.labels),
            corrected=tally.corrected,
            correction_rate=tally.correction_rate,
            corrections=dict(tally.corrections.most_common()),
        )


class SentimentStatsPublic(BaseModel):
    since: dt.datetime
    until: dt.datetime
    articles: int = Field(description="Received in the period")
    unscored: int = Field(description="Waiting for a model")
    versions: dict[str, VersionTallyPublic] = Field(
        description='By the model version that scored them ("sentiment v2")'
    )
    corrections: dict[str, int] = Field(description="Every version's corrections together")
    alerts: dict[str, int] = Field(description="Alerts that started in the period, by state")
    acknowledged: int


@router.get("/stats", response_model=SentimentStatsPublic, summary="How the monitor is doing")
def read_stats(
    session: SessionDep, since: ReportSince = None, until: ReportUntil = None
) -> SentimentStatsPublic:
    """Articles received in [since, until): how each model version read them and how often
    analysts relabelled its reading (and from what to what); the alerts that started in the
    period, by state. At most a year at a time."""
    since, until = reporting_period(since, until)
    stats = sentiment_stats(session, since, until)
    return SentimentStatsPublic(
        since=since,
        until=until,
        articles=stats.articles,
        unscored=stats.unscored,
        versions={name: VersionTallyPublic.of(tally) for name, tally in stats.versions.items()},
        corrections=dict(stats.corrections.most_common()),
        alerts=dict(stats.alerts),
        acknowledged=stats.acknowledged,
    )
