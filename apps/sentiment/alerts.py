"""Rolling windows per entity, rules over them, and the alert lifecycle.

For an entity at time `as_of` (event time: the newest article that touched it), a window of
`window_s` seconds holds its scored articles published in (as_of - window_s, as_of]:
volume, mean score and negative share. The entity's own baseline is the articles of the
`BASELINE_S` before the window, weighted by recency (half-life `HALF_LIFE_S`): its mean and
standard deviation of the score and its article rate. From those:

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
import math
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from apps.sentiment.models import (
    OPEN_STATES,
    Alert,
    AlertRule,
    AlertState,
    Article,
    ArticleEntity,
    RuleKind,
)

BASELINE_S = 7 * 24 * 3600
HALF_LIFE_S = 24 * 3600
MIN_BASELINE = 10
SD_FLOOR = 0.1  # a baseline of identical scores still leaves room for noise
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


@dataclass(frozen=True)
class WindowStats:
    start: dt.datetime
    end: dt.datetime
    volume: int
    mean_score: float | None
    negative_share: float | None
    baseline_count: int
    baseline_mean: float | None
    baseline_sd: float | None
    expected_volume: float

    def value(self, kind: RuleKind) -> float | None:
        """What a rule of `kind` compares with its threshold (None: cannot tell yet)."""
        if kind is RuleKind.NEGATIVE_SHARE:
            return self.negative_share
        if kind is RuleKind.VOLUME_SPIKE:
            return self.volume / max(self.expected_volume, 1.0)
        if self.mean_score is None or self.baseline_count < MIN_BASELINE:
            return None
        assert self.baseline_mean is not None and self.baseline_sd is not None
        error = max(self.baseline_sd, SD_FLOOR) / math.sqrt(self.volume)
        return (self.mean_score - self.baseline_mean) / error


def window_stats(
    session: Session, entity_id: uuid.UUID, as_of: dt.datetime, window_s: int
) -> WindowStats:
    start = as_of - dt.timedelta(seconds=window_s)
    scored = (
        select(Article.published_at, Article.score, Article.label)
        .join(ArticleEntity, ArticleEntity.article_id == Article.id)
        .where(ArticleEntity.entity_id == entity_id, Article.score.is_not(None))
    )
    window = session.execute(
        scored.where(ArticleEntity.published_at > start, ArticleEntity.published_at <= as_of)
    ).all()
    baseline_start = start - dt.timedelta(seconds=BASELINE_S)
    history = session.execute(
        scored.where(
            ArticleEntity.published_at > baseline_start, ArticleEntity.published_at <= start
        )
    ).all()
    volume = len(window)
    mean = sum(row.score for row in window) / volume if volume else None
    negative = sum(row.label == "negative" for row in window) / volume if volume else None
    baseline_mean = baseline_sd = None
    if history:
        weights = [
            0.5 ** ((start - row.published_at).total_seconds() / HALF_LIFE_S) for row in history
        ]
        total = sum(weights)
        baseline_mean = sum(w * row.score for w, row in zip(weights, history, strict=True)) / total
        variance = (
            sum(
                w * (row.score - baseline_mean) ** 2
                for w, row in zip(weights, history, strict=True)
            )
            / total
        )
        baseline_sd = math.sqrt(variance)
    # The rate the baseline predicts for a window this long (history spans at most BASELINE_S).
    span_s = BASELINE_S if history else 0
    expected = len(history) * window_s / span_s if span_s else 0.0
    return WindowStats(
        start, as_of, volume, mean, negative, len(history), baseline_mean, baseline_sd, expected
    )


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
    rules = session.scalars(
        select(AlertRule).where(
            AlertRule.enabled.is_(True),
            or_(AlertRule.entity_id == entity_id, AlertRule.entity_id.is_(None)),
        )
    ).all()
    own = {rule.name for rule in rules if rule.entity_id == entity_id}
    return [rule for rule in rules if rule.entity_id is not None or rule.name not in own]


@dataclass(frozen=True)
class AlertChange:
    """An alert that changed state: notify on `firing` and `resolved`."""

    alert_id: uuid.UUID
    entity_id: uuid.UUID
    state: AlertState


def evaluate(session: Session, entity_id: uuid.UUID, as_of: dt.datetime) -> list[AlertChange]:
    """Apply the entity's rules at `as_of`; flushes, does not commit."""
    changes: list[AlertChange] = []
    stats_by_window: dict[int, WindowStats] = {}
    for rule in rules_for(session, entity_id):
        if rule.window_s not in stats_by_window:
            stats_by_window[rule.window_s] = window_stats(session, entity_id, as_of, rule.window_s)
        change = _step(session, rule, entity_id, stats_by_window[rule.window_s])
        if change is not None:
            changes.append(change)
    session.flush()
    return changes


def _step(
    session: Session, rule: AlertRule, entity_id: uuid.UUID, stats: WindowStats
) -> AlertChange | None:
    as_of = stats.end
    condition, value = holds(rule, stats)
    alert = session.scalars(
        select(Alert).where(
            Alert.entity_id == entity_id,
            Alert.rule_id == rule.id,
            Alert.state.in_(OPEN_STATES),
        )
    ).first()
    details = {k: v for k, v in asdict(stats).items() if k not in ("start", "end")}
    if alert is not None:
        if as_of < alert.window_end:  # an older article arrived late: it cannot move time back
            return None
        if not condition:
            alert.state, alert.resolved_at = AlertState.RESOLVED, as_of
            return AlertChange(alert.id, entity_id, AlertState.RESOLVED)
        alert.value, alert.details, alert.window_end = value, details, as_of
        if alert.state is AlertState.PENDING and _held_long_enough(alert, rule, as_of):
            alert.state, alert.fired_at = AlertState.FIRING, as_of
            return AlertChange(alert.id, entity_id, AlertState.FIRING)
        return None
    if not condition or _cooling_down(session, rule, entity_id, as_of):
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
    return AlertChange(alert.id, entity_id, alert.state)


def _held_long_enough(alert: Alert, rule: AlertRule, as_of: dt.datetime) -> bool:
    return (as_of - alert.started_at).total_seconds() >= rule.for_s


def _cooling_down(
    session: Session, rule: AlertRule, entity_id: uuid.UUID, as_of: dt.datetime
) -> bool:
    if rule.cooldown_s <= 0:
        return False
    recent = session.scalar(
        select(func.count(Alert.id)).where(
            Alert.entity_id == entity_id,
            Alert.rule_id == rule.id,
            Alert.state == AlertState.RESOLVED,
            Alert.fired_at.is_not(None),
            Alert.resolved_at > as_of - dt.timedelta(seconds=rule.cooldown_s),
        )
    )
    return bool(recent)


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
