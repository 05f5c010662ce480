"""How the recommendations do: lists served, and the feedback events tied to them, by kind of
list and by the encoder that ranked them (so a tuned encoder version can be told apart)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import distinct, func, select
from sqlalchemy.orm import Session

from apps.recommend.models import Interaction, Recommendation
from core.ml.versions import version_names

VERSION_PREFIX = "version:"


@dataclass
class ListTally:
    """Lists of one kind from one encoder: how many were served, how many got any feedback
    event, and the events by type (view, click, cart, purchase, rating)."""

    lists: int = 0
    with_feedback: int = 0
    events: Counter[str] = field(default_factory=Counter)

    @property
    def feedback_rate(self) -> float | None:
        """The share of lists with at least one event on their items (None: none served)."""
        return self.with_feedback / self.lists if self.lists else None


@dataclass
class RecommendStats:
    since: dt.datetime
    until: dt.datetime
    by_kind: dict[str, ListTally] = field(default_factory=dict)
    by_encoder: dict[str, ListTally] = field(default_factory=dict)


def recommend_stats(session: Session, since: dt.datetime, until: dt.datetime) -> RecommendStats:
    """The lists served in [since, until) and the feedback sent with their ids (whenever it
    came), counted in the database."""
    in_period = (Recommendation.created_at >= since) & (Recommendation.created_at < until)
    groups = (Recommendation.kind, Recommendation.encoder)
    tallies: dict[tuple[str, str | None], ListTally] = {}
    for kind, encoder, lists in session.execute(
        select(*groups, func.count()).where(in_period).group_by(*groups)
    ):
        tallies[(kind.value, encoder)] = ListTally(lists=lists)
    engaged = select(*groups).join(Interaction, Interaction.recommendation_id == Recommendation.id)
    for kind, encoder, lists in session.execute(
        engaged.add_columns(func.count(distinct(Recommendation.id)))
        .where(in_period)
        .group_by(*groups)
    ):
        # setdefault: a list served between the reads (its group unseen by the first one)
        tallies.setdefault((kind.value, encoder), ListTally()).with_feedback = lists
    for kind, encoder, event_type, events in session.execute(
        engaged.add_columns(Interaction.type, func.count())
        .where(in_period)
        .group_by(*groups, Interaction.type)
    ):
        tallies.setdefault((kind.value, encoder), ListTally()).events[event_type.value] += events
    stats = RecommendStats(since, until)
    names = _encoder_names(session, {encoder for _kind, encoder in tallies})
    for (kind, encoder), tally in sorted(tallies.items(), key=lambda item: str(item[0])):
        for key, into in ((kind, stats.by_kind), (names.get(encoder, "none"), stats.by_encoder)):
            total = into.setdefault(key, ListTally())
            total.lists += tally.lists
            total.with_feedback += tally.with_feedback
            total.events.update(tally.events)
    return stats


def _encoder_names(session: Session, keys: set[str | None]) -> dict[str | None, str]:
    """Readable encoder names: a tuned version's key (`version:<id>`) as `<model> v<n>`; the
    base encoder's key (`model:<reference>`) as it is."""
    ids = {}
    for key in keys:
        if key is not None and key.startswith(VERSION_PREFIX):
            try:
                ids[uuid.UUID(key.removeprefix(VERSION_PREFIX))] = key
            except ValueError:
                continue
    names: dict[str | None, str] = {key: key for key in keys if key is not None}
    for version_id, name in version_names(session, ids).items():
        names[ids[version_id]] = name
    return names
