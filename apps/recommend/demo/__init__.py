"""The recommender's demo: an outdoor-gear shop's catalogue and synthetic shoppers' events."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy.orm import Session

from apps.recommend.catalogue import ItemIn, UpsertReport, upsert_items
from apps.recommend.demo.sessions import generate_events, load_catalogue
from apps.recommend.events import EventIn, EventReport, record_events

DEMO_USER = "u0002"  # a shopper with a long history (see `sessions.py`)


@dataclass(frozen=True)
class DemoLoad:
    items: UpsertReport
    events: EventReport


def load_demo(session: Session, now: dt.datetime | None = None) -> DemoLoad:
    """Store the catalogue and the shoppers' last 60 days of events (idempotent: a second
    load stores no event twice)."""
    catalogue = load_catalogue()
    items = upsert_items(session, [ItemIn.model_validate(item) for item in catalogue])
    events = generate_events(catalogue, now=now)
    recorded = record_events(session, [EventIn.model_validate(event) for event in events])
    return DemoLoad(items, recorded)
