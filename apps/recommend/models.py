"""The recommender's tables: the catalogue, user events, item embeddings, served lists."""

from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.storage.base import Base, created_at, str_enum, utcnow, uuid_pk


class EventType(StrEnum):
    VIEW = "view"
    CLICK = "click"
    CART = "cart"
    PURCHASE = "purchase"
    RATING = "rating"


class RecommendationKind(StrEnum):
    USER = "user"
    SIMILAR = "similar"
    QUERY = "query"


class Item(Base):
    """One thing the backend sells or shows, known by the backend's own id.

    `text_hash` is a hash of the text that is embedded (title, description, tags, category);
    an item whose stored embedding was made from another hash, or by another encoder, is
    embedded again.
    """

    __tablename__ = "recommend_items"

    id: Mapped[uuid.UUID] = uuid_pk()
    external_id: Mapped[str] = mapped_column(String(200), unique=True)
    title: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[list[str]] = mapped_column(default=list)
    category: Mapped[str | None] = mapped_column(String(200), index=True)
    series: Mapped[str | None] = mapped_column(String(200))
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    active: Mapped[bool] = mapped_column(default=True)
    text_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = created_at()
    # Indexed: the service reads the items changed since its last look every few seconds.
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow, index=True)


class Interaction(Base):
    """A user's event on an item. `event_id` (the backend's, or derived from the event's
    content) makes delivery idempotent; `recommendation_id` ties feedback to a served list."""

    __tablename__ = "recommend_interactions"
    __table_args__ = (
        Index("ix_recommend_interactions_user_time", "user_id", "occurred_at"),
        Index("ix_recommend_interactions_occurred_at", "occurred_at"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    event_id: Mapped[str] = mapped_column(String(200), unique=True)
    user_id: Mapped[str] = mapped_column(String(200))
    item_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("recommend_items.id", ondelete="CASCADE"), index=True
    )
    type: Mapped[EventType] = mapped_column(str_enum(EventType, "recommend_event_type"))
    value: Mapped[float | None] = mapped_column()
    occurred_at: Mapped[dt.datetime]
    recommendation_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("recommend_recommendations.id", ondelete="SET NULL"), index=True
    )
    received_at: Mapped[dt.datetime] = created_at()


class ItemEmbedding(Base):
    """An item's vector from one encoder (`encoder`: the model reference or version id)."""

    __tablename__ = "recommend_item_embeddings"
    # The service's periodic "vectors stored since" read, without scanning every vector.
    __table_args__ = (
        Index("ix_recommend_item_embeddings_encoder_created", "encoder", "created_at"),
    )

    item_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("recommend_items.id", ondelete="CASCADE"), primary_key=True
    )
    encoder: Mapped[str] = mapped_column(String(200), primary_key=True)
    text_hash: Mapped[str] = mapped_column(String(64))
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # float32, little-endian
    created_at: Mapped[dt.datetime] = created_at()


class Recommendation(Base):
    """A served list: what was asked, what came back, so feedback can refer to it."""

    __tablename__ = "recommend_recommendations"
    # Retention's "served before" read; the log gains a row per request (migration 0009).
    __table_args__ = (Index("ix_recommend_recommendations_created_at", "created_at"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    kind: Mapped[RecommendationKind] = mapped_column(str_enum(RecommendationKind, "recommend_kind"))
    user_id: Mapped[str | None] = mapped_column(String(200), index=True)
    request: Mapped[dict[str, Any]] = mapped_column(default=dict)
    items: Mapped[list[Any]] = mapped_column(default=list)  # [[external_id, score], ...]
    encoder: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = created_at()
