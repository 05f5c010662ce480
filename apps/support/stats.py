"""How the bot is doing: what share of customers' messages it answered, why it handed the others
off, per intent and per model version, and what the reviewers' labels say of its guesses."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from apps.support.messages import HandoffReason
from apps.support.models import Intent, Message, MessageRole, ReviewItem, ReviewStatus
from core.ml.versions import version_names

WITH_AGENTS = HandoffReason.ALREADY_HANDED_OFF.value


@dataclass
class Tally:
    """The bot's turns of one kind: messages, how many it answered, how many it handed off."""

    messages: int = 0
    answered: int = 0
    handed_off: int = 0

    @property
    def containment_rate(self) -> float | None:
        """The share of the bot's turns it answered itself (None: no turns)."""
        return self.answered / self.messages if self.messages else None

    def add(self, handoff: bool, count: int) -> None:
        self.messages += count
        if handoff:
            self.handed_off += count
        else:
            self.answered += count


@dataclass
class ReviewTally:
    """Review items of the period's messages by status; of the labelled ones, how many the
    bot had guessed right (the queue holds handoffs: these did not need one)."""

    pending: int = 0
    labelled: int = 0
    dismissed: int = 0
    bot_guess_right: int = 0


@dataclass
class SupportStats:
    since: dt.datetime
    until: dt.datetime
    customer_messages: int = 0
    with_agents: int = 0  # written while a person had the conversation: not the bot's turn
    bot: Tally = field(default_factory=Tally)
    handoff_reasons: dict[str, int] = field(default_factory=dict)
    intents: dict[str, Tally] = field(default_factory=dict)  # by the bot's top intent
    versions: dict[str, Tally] = field(default_factory=dict)  # by version ("<model> v<n>")
    review: ReviewTally = field(default_factory=ReviewTally)


def support_stats(session: Session, since: dt.datetime, until: dt.datetime) -> SupportStats:
    """The customers' messages written in [since, until), counted in the database."""
    in_period = (
        (Message.role == MessageRole.CUSTOMER)
        & (Message.created_at >= since)
        & (Message.created_at < until)
    )
    stats = SupportStats(since, until)
    reasons: Counter[str] = Counter()
    intents: defaultdict[str, Tally] = defaultdict(Tally)
    by_version: defaultdict[uuid.UUID | None, Tally] = defaultdict(Tally)
    rows = session.execute(
        select(
            Message.intent,
            Message.handoff,
            Message.handoff_reason,
            Message.model_version_id,
            func.count(),
        )
        .where(in_period)
        .group_by(Message.intent, Message.handoff, Message.handoff_reason, Message.model_version_id)
    ).all()
    for intent, handoff, reason, version_id, count in rows:
        stats.customer_messages += count
        if reason == WITH_AGENTS:
            stats.with_agents += count
            continue
        stats.bot.add(handoff, count)
        if handoff:
            reasons[reason or "unknown"] += count
        if intent is not None:
            intents[intent].add(handoff, count)
        by_version[version_id].add(handoff, count)
    names = version_names(session, by_version)
    stats.handoff_reasons = dict(reasons.most_common())
    stats.intents = dict(sorted(intents.items(), key=lambda item: (-item[1].messages, item[0])))
    # Turns without a model (none trained yet, or a deleted version) count above only.
    stats.versions = {name: by_version[version_id] for version_id, name in names.items()}
    _count_reviews(session, in_period, stats.review)
    return stats


def _count_reviews(session: Session, in_period: object, review: ReviewTally) -> None:
    rows = session.execute(
        select(ReviewItem.status, Intent.name == Message.intent, func.count())
        .join(Message, ReviewItem.message_id == Message.id)
        .outerjoin(Intent, ReviewItem.label_intent_id == Intent.id)
        .where(in_period)  # type: ignore[arg-type]
        .group_by(ReviewItem.status, Intent.name == Message.intent)
    ).all()
    for status, guessed_right, count in rows:
        if status is ReviewStatus.PENDING:
            review.pending += count
        elif status is ReviewStatus.DISMISSED:
            review.dismissed += count
        else:
            review.labelled += count
            if guessed_right:
                review.bot_guess_right += count
