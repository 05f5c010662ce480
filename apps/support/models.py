"""The support bot's tables: the intent catalogue, customers, conversations, the review queue."""

from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.storage.base import Base, created_at, str_enum, utcnow, uuid_pk


class Intent(Base):
    """What a customer may want, how to recognise it (examples) and what to answer."""

    __tablename__ = "support_intents"

    id: Mapped[uuid.UUID] = uuid_pk()
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    # The reply, with slots such as {customer_name} or {order_id|your order}.
    answer: Mapped[str] = mapped_column(Text)
    # Recognising this intent means "hand over to a person" (e.g. `talk_to_agent`).
    handoff: Mapped[bool] = mapped_column(default=False)
    tags: Mapped[list[str]] = mapped_column(default=list)
    owner: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = created_at()
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    examples: Mapped[list[Example]] = relationship(
        back_populates="intent", cascade="all, delete-orphan", order_by="Example.created_at"
    )


class ExampleSource(StrEnum):
    CATALOGUE = "catalogue"
    REVIEW = "review"


class Example(Base):
    """One utterance of an intent, from the catalogue or from a reviewed conversation."""

    __tablename__ = "support_examples"
    __table_args__ = (UniqueConstraint("intent_id", "text_hash"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    intent_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("support_intents.id", ondelete="CASCADE"), index=True
    )
    text: Mapped[str] = mapped_column(Text)
    text_hash: Mapped[str] = mapped_column(String(64))
    source: Mapped[ExampleSource] = mapped_column(str_enum(ExampleSource, "example_source"))
    created_at: Mapped[dt.datetime] = created_at()

    intent: Mapped[Intent] = relationship(back_populates="examples")


class Customer(Base):
    """What the helpdesk knows about a customer, for slots and personal touches."""

    __tablename__ = "support_customers"

    id: Mapped[uuid.UUID] = uuid_pk()
    external_id: Mapped[str] = mapped_column(String(200), unique=True)
    name: Mapped[str | None] = mapped_column(String(200))
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = created_at()
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ConversationStatus(StrEnum):
    BOT = "bot"
    HANDED_OFF = "handed_off"
    CLOSED = "closed"


class Conversation(Base):
    """A conversation on one channel (the API, Chatwoot, a generic helpdesk webhook)."""

    __tablename__ = "support_conversations"
    __table_args__ = (
        UniqueConstraint("channel", "external_id"),
        # Retention's "idle since" read (migration 0009).
        Index("ix_support_conversations_updated_at", "updated_at"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    channel: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str] = mapped_column(String(200))
    customer_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("support_customers.id", ondelete="SET NULL"), index=True
    )
    status: Mapped[ConversationStatus] = mapped_column(
        str_enum(ConversationStatus, "conversation_status"), default=ConversationStatus.BOT
    )
    # The intent last answered, and how many times in a row: the same question answered
    # again and again means the answer is not helping.
    last_intent: Mapped[str | None] = mapped_column(String(100))
    repeated_turns: Mapped[int] = mapped_column(default=0)
    # Slot values seen earlier in the conversation (e.g. an order number).
    slots: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Channel details needed to reply (e.g. Chatwoot's account id), never secrets.
    channel_data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = created_at()
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    def give_back_to_bot(self) -> None:
        """The bot answers again, with a fresh count of repeated answers."""
        self.status = ConversationStatus.BOT
        self.last_intent, self.repeated_turns = None, 0


class MessageRole(StrEnum):
    CUSTOMER = "customer"
    BOT = "bot"


class Message(Base):
    """A message in a conversation, stored with personal data masked."""

    __tablename__ = "support_messages"
    __table_args__ = (
        UniqueConstraint("conversation_id", "external_id"),
        Index("ix_support_messages_conversation_created", "conversation_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("support_conversations.id", ondelete="CASCADE")
    )
    # The helpdesk's message id, or the client's idempotency key: a retry is answered once.
    external_id: Mapped[str | None] = mapped_column(String(200))
    role: Mapped[MessageRole] = mapped_column(str_enum(MessageRole, "message_role"))
    text: Mapped[str] = mapped_column(Text)
    intent: Mapped[str | None] = mapped_column(String(100))
    confidence: Mapped[float | None]
    alternatives: Mapped[list[Any]] = mapped_column(default=list)
    handoff: Mapped[bool] = mapped_column(default=False)
    handoff_reason: Mapped[str | None] = mapped_column(String(64))
    # The answer given to this customer message (stored here so a retry returns it again).
    reply: Mapped[dict[str, Any] | None]
    model_version_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="SET NULL")
    )
    created_at: Mapped[dt.datetime] = created_at()


class ReviewStatus(StrEnum):
    PENDING = "pending"
    LABELLED = "labelled"
    DISMISSED = "dismissed"


class ReviewItem(Base):
    """A message the bot was unsure about or handed off, waiting for a person's label."""

    __tablename__ = "support_review_items"

    id: Mapped[uuid.UUID] = uuid_pk()
    message_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("support_messages.id", ondelete="CASCADE"), unique=True
    )
    reason: Mapped[str] = mapped_column(String(64))
    status: Mapped[ReviewStatus] = mapped_column(
        str_enum(ReviewStatus, "review_status"), default=ReviewStatus.PENDING, index=True
    )
    label_intent_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("support_intents.id", ondelete="SET NULL")
    )
    reviewer: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = created_at()
    reviewed_at: Mapped[dt.datetime | None]

    message: Mapped[Message] = relationship()
    label_intent: Mapped[Intent | None] = relationship()
