"""How the monitor is doing: articles received and how the model read them, per model version,
how often analysts corrected it (and from what to what), and the alerts raised."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from apps.sentiment.models import Alert, Article, LabelCorrection
from core.ml.versions import version_names


@dataclass
class VersionTally:
    """Articles one model version scored: by label, and the analysts' corrections of its
    reading ("model label -> analyst label": how many)."""

    articles: int = 0
    labels: Counter[str] = field(default_factory=Counter)
    corrections: Counter[str] = field(default_factory=Counter)

    @property
    def corrected(self) -> int:
        return sum(self.corrections.values())

    @property
    def correction_rate(self) -> float | None:
        """The share of its articles analysts relabelled (None: it scored none)."""
        return self.corrected / self.articles if self.articles else None


@dataclass
class SentimentStats:
    since: dt.datetime
    until: dt.datetime
    articles: int = 0  # received in the period
    unscored: int = 0  # waiting for a model
    versions: dict[str, VersionTally] = field(default_factory=dict)  # "<model> v<n>"
    alerts: Counter[str] = field(default_factory=Counter)  # raised in the period, by state now
    acknowledged: int = 0

    @property
    def corrections(self) -> Counter[str]:
        """Every version's corrections together."""
        return sum((tally.corrections for tally in self.versions.values()), Counter())


def sentiment_stats(session: Session, since: dt.datetime, until: dt.datetime) -> SentimentStats:
    """The articles received in [since, until) and the alerts that started in it, counted in
    the database."""
    stats = SentimentStats(since, until)
    received = (Article.received_at >= since) & (Article.received_at < until)
    by_version: dict[uuid.UUID | None, VersionTally] = {}
    rows = session.execute(
        select(Article.model_version_id, Article.label, LabelCorrection.label, func.count())
        .outerjoin(LabelCorrection, LabelCorrection.article_id == Article.id)
        .where(received)
        .group_by(Article.model_version_id, Article.label, LabelCorrection.label)
    ).all()
    for version_id, label, corrected_to, count in rows:
        stats.articles += count
        if label is None:
            stats.unscored += count
            continue
        tally = by_version.setdefault(version_id, VersionTally())
        tally.articles += count
        tally.labels[label] += count
        if corrected_to is not None and corrected_to != label:
            tally.corrections[f"{label} -> {corrected_to}"] += count
    # Articles whose version was deleted count in `articles` only.
    names = version_names(session, by_version)
    stats.versions = {name: by_version[version_id] for version_id, name in names.items()}
    started = (Alert.started_at >= since) & (Alert.started_at < until)
    for state, acknowledged, count in session.execute(
        select(Alert.state, Alert.acknowledged_at.is_not(None), func.count())
        .where(started)
        .group_by(Alert.state, Alert.acknowledged_at.is_not(None))
    ):
        stats.alerts[state.value] += count
        if acknowledged:
            stats.acknowledged += count
    return stats
