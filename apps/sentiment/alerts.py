"""Rules over an entity's rolling windows (`apps.sentiment.windows`), and the alert lifecycle.

A rule compares one figure of a window with its threshold:

- `negative_share`: share of negative articles in the window (fires above the threshold);
- `z_score`: (window mean - baseline mean) / (baseline sd / sqrt(volume)), the window mean's
  distance from the baseline in standard errors (fires below the threshold, e.g. -3);
- `volume_spike`: window volume / the volume the baseline rate predicts (fires at or above).

No rule holds on fewer than its `min_articles` in the window (nor `z_score` on fewer than
`MIN_BASELINE` baseline articles). An alert is pending while its condition holds for less
than the rule's `for_s`, then firing; it resolves when the condition stops holding, and no new
alert opens for the same entity and rule until `cooldown_s` after that.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from apps.sentiment.models import OPEN_STATES, Alert, AlertRule, AlertState, ArticleEntity, RuleKind
from apps.sentiment.windows import BASELINE_S, HistoryCache, WindowStats, read_histories

EVALUATION_GRANULARITY_S = 60

DEFAULT_RULES = (
    {"name": "sharp-drop-1h", "kind": RuleKind.Z_SCORE, "window_s": 3600, "threshold": -3.0,
     "min_articles": 5},
    {"name": "negative-share-1h", "kind": RuleKind.NEGATIVE_SHARE, "window_s": 3600,
     "threshold": 0.6, "min_articles": 5},
    {"name": "volume-spike-1h", "kind": RuleKind.VOLUME_SPIKE, "window_s": 3600,
     "threshold": 4.0, "min_articles": 10},
    {"name": "sharp-drop-24h", "kind": RuleKind.Z_SCORE, "window_s": 86400, "threshold": -3.0,
     "min_articles": 10},
)  # fmt: skip


def holds(rule: AlertRule, stats: WindowStats) -> tuple[bool, float | None]:
    """Whether the rule's condition holds on the window, and the measured value."""
    value = stats.value(rule.kind)
    if value is None or stats.volume < rule.min_articles:
        return False, value
    if rule.kind is RuleKind.Z_SCORE:
        return value < rule.threshold, value
    if rule.kind is RuleKind.NEGATIVE_SHARE:
        return value > rule.threshold, value
    return value >= rule.threshold, value


def rules_for(session: Session, entity_id: uuid.UUID) -> list[AlertRule]:
    """The entity's own rules, and the global rules it has not overridden (by name)."""
    return _rules_by_entity(session, [entity_id])[entity_id]


def _rules_by_entity(
    session: Session, entity_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, list[AlertRule]]:
    """`rules_for` of several entities, in one query."""
    ids = list(entity_ids)
    rules = session.scalars(
        select(AlertRule)
        .where(
            AlertRule.enabled.is_(True),
            or_(AlertRule.entity_id.in_(ids), AlertRule.entity_id.is_(None)),
        )
        .order_by(AlertRule.name, AlertRule.id)
    ).all()
    own: dict[uuid.UUID | None, set[str]] = {}
    for rule in rules:
        own.setdefault(rule.entity_id, set()).add(rule.name)
    return {
        entity_id: [
            rule
            for rule in rules
            if rule.entity_id == entity_id
            or (rule.entity_id is None and rule.name not in own.get(entity_id, ()))
        ]
        for entity_id in ids
    }


@dataclass(frozen=True)
class AlertChange:
    """An alert that changed state. Notified: `firing`, and `resolved` after it had fired
    (`announced`); a pending alert that resolves before firing was never news to anyone."""

    alert_id: uuid.UUID
    entity_id: uuid.UUID
    state: AlertState
    announced: bool = True


def evaluate(session: Session, entity_id: uuid.UUID, as_of: dt.datetime) -> list[AlertChange]:
    """Apply the entity's rules at `as_of`; flushes, does not commit."""
    return evaluate_entities(session, {entity_id: [as_of]})


def evaluate_entities(
    session: Session,
    times: Mapping[uuid.UUID, Sequence[dt.datetime]],
    histories: HistoryCache | None = None,
) -> list[AlertChange]:
    """Apply each entity's rules at each of its times, oldest first, as `evaluate` would one
    after the other; flushes, does not commit.

    The number of queries does not grow with the entities (up to the windows'
    `ENTITIES_PER_QUERY`): the rules, the scored articles of every window and baseline, and
    the open and recently resolved alerts are each read once, and the steps run on what was
    read.
    """
    if not times:  # a batch that mentions no company on the watchlist
        return []
    rules = _rules_by_entity(session, times)
    book = _AlertBook.load(session, times, rules)
    changes = list(book.closed)
    points = {entity_id: sorted(at) for entity_id, at in times.items() if at and rules[entity_id]}
    if not points:
        session.flush()
        return changes
    spans = {
        entity_id: (
            at[0] - dt.timedelta(seconds=max(r.window_s for r in rules[entity_id]) + BASELINE_S),
            at[-1],
        )
        for entity_id, at in points.items()
    }
    by_entity = (
        read_histories(session, spans) if histories is None else histories.read(session, spans)
    )
    for entity_id, at in points.items():
        for as_of in at:
            stats_by_window: dict[int, WindowStats] = {}
            for rule in rules[entity_id]:
                if rule.window_s not in stats_by_window:
                    stats_by_window[rule.window_s] = by_entity[entity_id].stats(
                        as_of, rule.window_s
                    )
                change = _step(session, book, rule, entity_id, stats_by_window[rule.window_s])
                if change is not None:
                    changes.append(change)
    session.flush()
    return changes


class _AlertBook:
    """The open alert of each (entity, rule), and when its last fired alert resolved (for
    the cooldown), read in one query and kept current as the steps change them."""

    def __init__(self) -> None:
        self.open: dict[tuple[uuid.UUID, uuid.UUID], Alert] = {}
        self.last_resolved: dict[tuple[uuid.UUID, uuid.UUID], dt.datetime] = {}
        # Open alerts whose rule no longer applies to their entity (disabled, moved to
        # another company, overridden by the company's own rule of its name): resolved at
        # load, as nothing would evaluate them again and they would fire forever.
        self.closed: list[AlertChange] = []

    @classmethod
    def load(
        cls,
        session: Session,
        times: Mapping[uuid.UUID, Sequence[dt.datetime]],
        rules: Mapping[uuid.UUID, Sequence[AlertRule]],
    ) -> _AlertBook:
        book = cls()
        wanted = [Alert.state.in_(OPEN_STATES)]
        judged = [entity_id for entity_id, at in times.items() if at and rules[entity_id]]
        cooldown_s = max(
            (rule.cooldown_s for entity_id in judged for rule in rules[entity_id]), default=0
        )
        if cooldown_s > 0:
            # Resolved before the earliest evaluation's cooldown began: no rule can see it.
            earliest = min(min(times[e]) for e in judged) - dt.timedelta(seconds=cooldown_s)
            wanted.append(
                and_(
                    Alert.state == AlertState.RESOLVED,
                    Alert.fired_at.is_not(None),
                    Alert.resolved_at > earliest,
                )
            )
        for alert in session.scalars(
            select(Alert).where(Alert.entity_id.in_(list(times)), or_(*wanted))
        ):
            if alert.state is AlertState.RESOLVED:
                book.resolved(alert)
            elif alert.rule_id not in {rule.id for rule in rules[alert.entity_id]}:
                at = max(times[alert.entity_id], default=alert.window_end)
                book.closed.append(_resolve(alert, at))
            else:
                book.open[(alert.entity_id, alert.rule_id)] = alert
        return book

    def resolved(self, alert: Alert) -> None:
        """Note an alert that resolved; one that never fired starts no cooldown."""
        self.open.pop((alert.entity_id, alert.rule_id), None)
        if alert.fired_at is None or alert.resolved_at is None:
            return
        key = (alert.entity_id, alert.rule_id)
        self.last_resolved[key] = max(
            alert.resolved_at, self.last_resolved.get(key, alert.resolved_at)
        )

    def cooling_down(self, rule: AlertRule, entity_id: uuid.UUID, as_of: dt.datetime) -> bool:
        """An alert of this rule and entity that fired resolved less than `cooldown_s` ago."""
        if rule.cooldown_s <= 0:
            return False
        last = self.last_resolved.get((entity_id, rule.id))
        return last is not None and last > as_of - dt.timedelta(seconds=rule.cooldown_s)


def _step(
    session: Session,
    book: _AlertBook,
    rule: AlertRule,
    entity_id: uuid.UUID,
    stats: WindowStats,
) -> AlertChange | None:
    as_of = stats.end
    condition, value = holds(rule, stats)
    alert = book.open.get((entity_id, rule.id))
    details = {k: v for k, v in asdict(stats).items() if k not in ("start", "end")}
    if alert is not None:
        if as_of < alert.window_end:  # an older article arrived late: it cannot move time back
            return None
        if not condition:
            change = _resolve(alert, as_of)  # as_of >= window_end, checked above
            book.resolved(alert)
            return change
        alert.value, alert.details, alert.window_end = value, details, as_of
        if alert.state is AlertState.PENDING and _held_long_enough(alert, rule, as_of):
            alert.state, alert.fired_at = AlertState.FIRING, as_of
            return AlertChange(alert.id, entity_id, AlertState.FIRING)
        return None
    if not condition or book.cooling_down(rule, entity_id, as_of):
        return None
    alert = Alert(
        id=uuid.uuid4(),
        entity_id=entity_id,
        rule_id=rule.id,
        state=AlertState.PENDING,
        window_start=stats.start,
        window_end=as_of,
        value=value,
        threshold=rule.threshold,
        details=details,
        started_at=as_of,
    )
    if rule.for_s == 0:
        alert.state, alert.fired_at = AlertState.FIRING, as_of
    # Another worker may open the same alert meanwhile: the partial unique index refuses the
    # second at flush (IntegrityError), and the caller's retry then finds the first.
    session.add(alert)
    book.open[(entity_id, rule.id)] = alert
    return AlertChange(alert.id, entity_id, alert.state)


def close_rule_alerts(
    session: Session, rule_id: uuid.UUID, now: dt.datetime, *, keep: uuid.UUID | None = None
) -> list[AlertChange]:
    """Resolve the open alerts of a rule that no longer judges them (disabled, or moved to
    another company) now, rather than at the next evaluation of their company. Those of
    entity `keep` stay (the company the rule still watches)."""
    query = select(Alert).where(Alert.rule_id == rule_id, Alert.state.in_(OPEN_STATES))
    if keep is not None:
        query = query.where(Alert.entity_id != keep)
    return [_resolve(alert, now) for alert in session.scalars(query)]


def _resolve(alert: Alert, at: dt.datetime) -> AlertChange:
    """Resolve `alert` at `at` (never before its last measurement); announced if it fired."""
    had_fired = alert.state is AlertState.FIRING
    alert.state, alert.resolved_at = AlertState.RESOLVED, max(at, alert.window_end)
    return AlertChange(alert.id, alert.entity_id, AlertState.RESOLVED, announced=had_fired)


def _held_long_enough(alert: Alert, rule: AlertRule, as_of: dt.datetime) -> bool:
    return (as_of - alert.started_at).total_seconds() >= rule.for_s


def ensure_default_rules(session: Session) -> list[AlertRule]:
    """Install the default global rules that are missing (by name)."""
    present = set(session.scalars(select(AlertRule.name).where(AlertRule.entity_id.is_(None))))
    added = [AlertRule(**rule) for rule in DEFAULT_RULES if rule["name"] not in present]
    session.add_all(added)
    session.flush()
    return added


def touched_entities(
    session: Session, article_ids: Iterable[uuid.UUID], now: dt.datetime
) -> dict[uuid.UUID, list[dt.datetime]]:
    """Entity -> the times to evaluate it at, for a batch of new articles that mention it.

    Event time (each article's publication), so a replayed history raises the alerts it would
    have raised live; times within `EVALUATION_GRANULARITY_S` of each other are evaluated once
    (the last of them), and none lies ahead of `now`, whatever a publisher's timestamp says.
    """
    ids = list(article_ids)
    if not ids:
        return {}
    rows = session.execute(
        select(ArticleEntity.entity_id, ArticleEntity.published_at)
        .where(ArticleEntity.article_id.in_(ids))
        .order_by(ArticleEntity.entity_id, ArticleEntity.published_at)
    ).all()
    times: dict[uuid.UUID, list[dt.datetime]] = {}
    for entity_id, published_at in rows:
        times.setdefault(entity_id, []).append(min(published_at, now))
    return {entity_id: _coalesced(points) for entity_id, points in times.items()}


def _coalesced(points: list[dt.datetime]) -> list[dt.datetime]:
    """Sorted times -> the last time of each run that starts a granule after the previous."""
    kept: list[dt.datetime] = []
    anchor: dt.datetime | None = None
    for point in points:
        if anchor is not None and (point - anchor).total_seconds() < EVALUATION_GRANULARITY_S:
            kept[-1] = point
        else:
            anchor = point
            kept.append(point)
    return kept


def stale_open_alerts(
    session: Session, now: dt.datetime
) -> Sequence[tuple[uuid.UUID, dt.datetime]]:
    """(entity, now) for every entity with an open alert last measured before `now`: the
    periodic sweep re-evaluates them so that quiet entities resolve."""
    rows = session.execute(
        select(Alert.entity_id)
        .where(and_(Alert.state.in_(OPEN_STATES), Alert.window_end < now))
        .distinct()
    ).all()
    return [(entity_id, now) for (entity_id,) in rows]
