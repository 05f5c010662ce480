"""`/v1/support/stats`: what share of customers' messages the bot answered, and how well."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict

from pydantic import BaseModel, Field

from apps.support.stats import Tally, support_stats
from core.api.deps import (
    ReportSince,
    ReportUntil,
    SessionDep,
    reporting_period,
    scoped_router,
)
from core.storage.models import Scope

router = scoped_router(Scope.SUPPORT, "support")


class TallyPublic(BaseModel):
    messages: int
    answered: int
    handed_off: int
    containment_rate: float | None = Field(description="answered / messages (None: none)")

    @classmethod
    def of(cls, tally: Tally) -> TallyPublic:
        return cls(**asdict(tally), containment_rate=tally.containment_rate)


class ReviewPublic(BaseModel):
    pending: int
    labelled: int
    dismissed: int
    bot_guess_right: int = Field(
        description="Labelled messages whose label is the bot's own top intent: handoffs that "
        "were not needed"
    )


class SupportStatsPublic(BaseModel):
    since: dt.datetime
    until: dt.datetime
    customer_messages: int
    with_agents: int = Field(description="Written while a person had the conversation")
    bot: TallyPublic = Field(description="The bot's turns: the other customer messages")
    handoff_reasons: dict[str, int]
    intents: dict[str, TallyPublic] = Field(description="By the bot's top intent")
    versions: dict[str, TallyPublic] = Field(
        description='By the model version that decided ("support-intents v3")'
    )
    review: ReviewPublic


@router.get("/stats", response_model=SupportStatsPublic, summary="How the bot is doing")
def read_stats(
    session: SessionDep,
    since: ReportSince = None,
    until: ReportUntil = None,
) -> SupportStatsPublic:
    """Customers' messages written in [since, until): how many the bot answered itself
    (containment) and why it handed the others off, per intent and per model version, and
    what the reviewers' labels say of its guesses. At most a year at a time."""
    since, until = reporting_period(since, until)
    stats = support_stats(session, since, until)
    return SupportStatsPublic(
        since=since,
        until=until,
        customer_messages=stats.customer_messages,
        with_agents=stats.with_agents,
        bot=TallyPublic.of(stats.bot),
        handoff_reasons=stats.handoff_reasons,
        intents={name: TallyPublic.of(tally) for name, tally in stats.intents.items()},
        versions={name: TallyPublic.of(tally) for name, tally in stats.versions.items()},
        review=ReviewPublic(**asdict(stats.review)),
    )
