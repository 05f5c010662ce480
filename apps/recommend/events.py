"""User events on items: views, clicks, carts, purchases, ratings.

Delivery is idempotent: an event is stored once per `event_id` (the backend's, or, when it
sends none, a hash of the event's content and timestamp; with no timestamp either, the time it
was received stands in, so only an `event_id` or a timestamp makes a retry safe). Events
naming an item the catalogue does not hold, a recommendation that was never served, or an item
that recommendation did not list, are rejected with the offending ids, and a batch with any
such event stores nothing, so a retry after fixing it cannot double-count.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from apps.recommend.catalogue import ExternalId, items_by_external_id
from apps.recommend.models import EventType, Interaction, Item, Recommendation
from core.storage.engine import in_slices
from core.validation import PastDatetime

MAX_BATCH = 10_000
# Trimmed, like item ids: " u1 " is the user u1 wherever it comes in (an event, a query, a
# list's path).
UserId = ExternalId


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: ExternalId | None = Field(
        default=None,
        description="Makes delivery idempotent; derived from the content and `timestamp` if "
        "absent. Without either, a retry is a second event (send one to retry safely).",
    )
    user_id: UserId
    item_id: ExternalId = Field(description="The item's external id.")
    type: EventType
    value: float | None = Field(default=None, description="The rating, for `rating` events.")
    timestamp: PastDatetime | None = Field(
        default=None, description="Default: received time; at most a day ahead of the server's."
    )
    recommendation_id: uuid.UUID | None = Field(
        default=None, description="The list this event came from (feedback)."
    )

    @model_validator(mode="after")
    def _check_value(self) -> EventIn:
        if self.type is EventType.RATING and self.value is None:
            raise ValueError("a rating event needs a value")
        if self.value is not None and not -1e6 <= self.value <= 1e6:
            raise ValueError(f"value {self.value} is out of range")
        return self

    def key(self, received: dt.datetime) -> str:
        if self.event_id is not None:
            return self.event_id
        content = [self.user_id, self.item_id, self.type.value, self.value]
        content.append((self.timestamp or received).isoformat())
        return "sha256:" + hashlib.sha256(json.dumps(content).encode()).hexdigest()


def _what(event: EventIn, items: Mapping[str, Item]) -> tuple[Any, ...]:
    """What an event says happened (its time aside: a retry without one is received later)."""
    return (event.user_id, items[event.item_id].id, event.type, event.value)


@dataclass(frozen=True)
class RatingScale:
    """The values a rating may take (settings `rating_min`, `rating_max`)."""

    lowest: float = 1.0
    highest: float = 5.0

    @property
    def midpoint(self) -> float:
        return (self.lowest + self.highest) / 2

    def problem(self, value: float | None) -> str | None:
        """Why `value` cannot be a rating, or None."""
        if value is None or self.lowest <= value <= self.highest:
            return None
        return (
            f"rating {value:g} is outside the rating scale {self.lowest:g} to {self.highest:g} "
            "(settings TEXTSUITE_RECOMMEND_RATING_MIN and _MAX)"
        )


class EventRejected(ValueError):
    """Events that cannot be stored; `problems` maps each event's index to why."""

    def __init__(self, problems: dict[int, str]) -> None:
        self.problems = problems
        listed = "; ".join(f"event {i}: {why}" for i, why in list(problems.items())[:20])
        more = f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""
        super().__init__(f"{len(problems)} event(s) rejected, nothing stored: {listed}{more}")


@dataclass(frozen=True)
class EventReport:
    stored: int
    duplicates: int


def record_events(
    session: Session,
    events: Sequence[EventIn],
    ratings: RatingScale = RatingScale(),
    *,
    write: bool = True,
    received: dt.datetime | None = None,
) -> EventReport:
    """Store `events` in the caller's transaction; `EventRejected` before any write (ratings
    outside `ratings` included). `write=False` only checks them. `received` (default: now)
    stamps the events that carry no time of their own."""
    received = received or dt.datetime.now(dt.UTC)
    items = items_by_external_id(session, sorted({e.item_id for e in events}))
    served = {e.recommendation_id for e in events if e.recommendation_id is not None}
    # Each served list's items (feedback names one of them) and user (a personal list's
    # feedback comes from the user it was made for; a similar-items list is anyone's).
    listed: dict[uuid.UUID, set[str]] = {}
    made_for: dict[uuid.UUID, str | None] = {}
    for chunk in in_slices(served):
        query = select(Recommendation.id, Recommendation.items, Recommendation.user_id)
        for list_id, entries, user_id in session.execute(query.where(Recommendation.id.in_(chunk))):
            listed[list_id] = {entry[0] for entry in entries}
            made_for[list_id] = user_id
    problems: dict[int, str] = {}
    for i, event in enumerate(events):
        if event.item_id not in items:
            problems[i] = f"unknown item {event.item_id!r}: add it to the catalogue first"
        elif event.recommendation_id is not None and event.recommendation_id not in listed:
            problems[i] = f"unknown recommendation id {event.recommendation_id}"
        elif (
            event.recommendation_id is not None
            and event.item_id not in listed[event.recommendation_id]
        ):
            problems[i] = (
                f"item {event.item_id!r} was not in recommendation {event.recommendation_id}: "
                "feedback names one of the list's items"
            )
        elif event.recommendation_id is not None and made_for[event.recommendation_id] not in (
            None,
            event.user_id,
        ):
            problems[i] = (
                f"recommendation {event.recommendation_id} was made for another user; "
                "feedback comes from the user it was made for"
            )
        elif event.type is EventType.RATING and (why := ratings.problem(event.value)):
            problems[i] = why
    keys = [event.key(received) for event in events]
    keyed: dict[str, EventIn] = {}
    for i, (key, event) in enumerate(zip(keys, events, strict=True)):
        if i in problems:  # refused already: every problem is reported in one answer
            continue
        earlier = keyed.setdefault(key, event)
        if earlier is not event and _what(earlier, items) != _what(event, items):
            problems[i] = f"event_id {event.event_id!r} names another event earlier in the batch"
    columns = (
        Interaction.event_id,
        Interaction.user_id,
        Interaction.item_id,
        Interaction.type,
        Interaction.value,
    )
    was = {
        row.event_id: (row.user_id, row.item_id, row.type, row.value)
        for chunk in in_slices(keyed)
        for row in session.execute(select(*columns).where(Interaction.event_id.in_(chunk)))
    }
    for i, (key, event) in enumerate(zip(keys, events, strict=True)):
        if i not in problems and key in was and was[key] != _what(event, items):
            problems[i] = (
                f"event_id {event.event_id!r} is stored for another event (user, item, type "
                "or value differ): a new event needs a new event_id"
            )
    if problems:
        raise EventRejected(problems)
    if not write:
        return EventReport(stored=0, duplicates=0)
    new = [
        Interaction(
            event_id=key,
            user_id=event.user_id,
            item_id=items[event.item_id].id,
            type=event.type,
            value=event.value,
            occurred_at=event.timestamp or received,
            recommendation_id=event.recommendation_id,
        )
        for key, event in keyed.items()
        if key not in was
    ]
    session.add_all(new)
    session.flush()
    return EventReport(stored=len(new), duplicates=len(events) - len(new))
