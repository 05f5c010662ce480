"""The sentiment monitor's tables: the watchlist, articles with their scores, ingest state."""

from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.storage.base import Base, created_at, str_enum, utcnow, uuid_pk


class Entity(Base):
    """A company on the watchlist: its ticker, name and the other names the news uses."""

    __tablename__ = "sentiment_entities"

    id: Mapped[uuid.UUID] = uuid_pk()
    ticker: Mapped[str] = mapped_column(String(16), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    aliases: Mapped[list[str]] = mapped_column(default=list)
    sector: Mapped[str | None] = mapped_column(String(100))
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[dt.datetime] = created_at()
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Article(Base):
    """One news item or post, stored once however often and by whichever path it arrives.

    Duplicates are recognised by the source's own id, by URL and by a hash of the normalised
    text; each has a unique constraint, so concurrent deliveries cannot both insert. The score
    columns stay empty until the article is scored.
    """

    __tablename__ = "sentiment_articles"
    __table_args__ = (
        UniqueConstraint("source", "external_id"),
        Index("ix_sentiment_articles_published_at", "published_at"),
        # What was scored since a time: the alert windows' cache reads it (migration 0007).
        Index("ix_sentiment_articles_scored_at", "scored_at"),
        # The stats' "received in a period" read (migration 0009).
        Index("ix_sentiment_articles_received_at", "received_at"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    source: Mapped[str] = mapped_column(String(100))
    external_id: Mapped[str | None] = mapped_column(String(300))
    url: Mapped[str | None] = mapped_column(String(2000), unique=True)
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str | None] = mapped_column(Text)
    published_at: Mapped[dt.datetime]
    received_at: Mapped[dt.datetime] = created_at()
    # Scoring: negative / neutral / positive, their probabilities, P(pos) - P(neg).
    label: Mapped[str | None] = mapped_column(String(16))
    probabilities: Mapped[dict[str, Any] | None] = mapped_column()
    score: Mapped[float | None] = mapped_column()
    model_version_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="SET NULL")
    )
    scored_at: Mapped[dt.datetime | None] = mapped_column()

    entities: Mapped[list[Entity]] = relationship(secondary="sentiment_article_entities")
    # An analyst's label where the model read it wrong (loaded only where asked for).
    correction: Mapped[LabelCorrection | None] = relationship(lazy="raise_on_sql", viewonly=True)


class LabelCorrection(Base):
    """An analyst's label for an article the model read wrong: shown beside the model's, and
    learnt by the next training run. The model's own label and score stay as they were."""

    __tablename__ = "sentiment_label_corrections"

    id: Mapped[uuid.UUID] = uuid_pk()
    article_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("sentiment_articles.id", ondelete="CASCADE"), unique=True
    )
    label: Mapped[str] = mapped_column(String(16))
    analyst: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = created_at()
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ArticleEntity(Base):
    """An article mentions an entity (`$AAPL`, "Apple", an alias)."""

    __tablename__ = "sentiment_article_entities"
    # Alert windows read an entity's articles by publication time (migration 0007).
    __table_args__ = (
        Index(
            "ix_sentiment_article_entities_entity_published",
            "entity_id",
            "published_at",
            "article_id",
        ),
    )

    article_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("sentiment_articles.id", ondelete="CASCADE"), primary_key=True
    )
    entity_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("sentiment_entities.id", ondelete="CASCADE"), primary_key=True
    )
    # Denormalised from the article so that windows per entity read one index.
    published_at: Mapped[dt.datetime]


class DeadLetter(Base):
    """A stream message that could not be ingested after the allowed deliveries."""

    __tablename__ = "sentiment_dead_letters"
    __table_args__ = (UniqueConstraint("stream", "message_id"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    stream: Mapped[str] = mapped_column(String(200))
    message_id: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column()
    error: Mapped[str] = mapped_column(Text)
    deliveries: Mapped[int] = mapped_column()
    created_at: Mapped[dt.datetime] = created_at()


class Feed(Base):
    """An RSS/Atom feed polled with conditional GET (ETag / Last-Modified remembered)."""

    __tablename__ = "sentiment_feeds"

    id: Mapped[uuid.UUID] = uuid_pk()
    url: Mapped[str] = mapped_column(String(2000), unique=True)
    name: Mapped[str | None] = mapped_column(String(200))
    etag: Mapped[str | None] = mapped_column(String(500))
    modified: Mapped[str | None] = mapped_column(String(100))
    last_polled_at: Mapped[dt.datetime | None] = mapped_column()
    last_status: Mapped[int | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(Text)
    # Digests of the entries its last fetch listed: a feed lists an entry for days, and one
    # taken in is not taken in again, even once retention has deleted its article.
    entry_keys: Mapped[list[str]] = mapped_column(default=list)
    created_at: Mapped[dt.datetime] = created_at()


class RuleKind(StrEnum):
    NEGATIVE_SHARE = "negative_share"  # share of negative articles in the window above x
    Z_SCORE = "z_score"  # window mean score below the baseline by more than k standard errors
    VOLUME_SPIKE = "volume_spike"  # articles in the window above x times the baseline rate


class AlertRule(Base):
    """A condition on an entity's rolling window. Without an entity it applies to every entity
    that has no rule of the same name of its own."""

    __tablename__ = "sentiment_rules"
    __table_args__ = (
        UniqueConstraint("name", "entity_id"),
        # NULLs never clash in a unique constraint: global rules need their own index.
        Index(
            "uq_sentiment_rules_global_name",
            "name",
            unique=True,
            postgresql_where=text("entity_id IS NULL"),
            sqlite_where=text("entity_id IS NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    name: Mapped[str] = mapped_column(String(100))
    entity_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("sentiment_entities.id", ondelete="CASCADE")
    )
    kind: Mapped[RuleKind] = mapped_column(str_enum(RuleKind, "rule_kind"))
    window_s: Mapped[int] = mapped_column()
    threshold: Mapped[float] = mapped_column()
    min_articles: Mapped[int] = mapped_column(default=5)
    # The condition must hold this long (pending) before the alert fires.
    for_s: Mapped[int] = mapped_column(default=0)
    # After an alert resolves, no new one for the same entity and rule for this long.
    cooldown_s: Mapped[int] = mapped_column(default=3600)
    enabled: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[dt.datetime] = created_at()
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AlertState(StrEnum):
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


OPEN_STATES = (AlertState.PENDING.value, AlertState.FIRING.value)


class Alert(Base):
    """One episode of a rule holding for an entity: pending -> firing -> resolved.

    At most one open (pending or firing) alert per entity and rule: a partial unique index
    makes a second one impossible, however many workers evaluate at once.
    """

    __tablename__ = "sentiment_alerts"
    __table_args__ = (
        Index(
            "uq_sentiment_alerts_open",
            "entity_id",
            "rule_id",
            unique=True,
            postgresql_where=text("state IN ('pending', 'firing')"),
            sqlite_where=text("state IN ('pending', 'firing')"),
        ),
        Index("ix_sentiment_alerts_updated_at", "updated_at"),
        Index("ix_sentiment_alerts_started_at", "started_at"),  # the stats' read (0009)
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    entity_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("sentiment_entities.id", ondelete="CASCADE"), index=True
    )
    rule_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sentiment_rules.id", ondelete="CASCADE"))
    state: Mapped[AlertState] = mapped_column(str_enum(AlertState, "alert_state"))
    # The window the condition was measured on (event time), and what was measured.
    window_start: Mapped[dt.datetime]
    window_end: Mapped[dt.datetime]
    value: Mapped[float] = mapped_column()
    threshold: Mapped[float] = mapped_column()
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    started_at: Mapped[dt.datetime]  # the condition first held (event time)
    fired_at: Mapped[dt.datetime | None] = mapped_column()
    resolved_at: Mapped[dt.datetime | None] = mapped_column()
    acknowledged_at: Mapped[dt.datetime | None] = mapped_column()
    acknowledged_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = created_at()
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    entity: Mapped[Entity] = relationship()
    rule: Mapped[AlertRule] = relationship()


class WebhookTarget(Base):
    """Where alert notifications go (Slack-compatible JSON; signed when a secret is set)."""

    __tablename__ = "sentiment_webhooks"

    id: Mapped[uuid.UUID] = uuid_pk()
    url: Mapped[str] = mapped_column(String(2000), unique=True)
    secret: Mapped[str | None] = mapped_column(String(200))
    enabled: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[dt.datetime] = created_at()
