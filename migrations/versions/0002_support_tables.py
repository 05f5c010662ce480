"""support bot tables

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 13:42:48
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "support_customers",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("external_id", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column(
            "attributes", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_support_customers")),
        sa.UniqueConstraint("external_id", name=op.f("uq_support_customers_external_id")),
    )
    op.create_table(
        "support_intents",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("handoff", sa.Boolean(), nullable=False),
        sa.Column("tags", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("owner", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_support_intents")),
        sa.UniqueConstraint("name", name=op.f("uq_support_intents_name")),
    )
    op.create_table(
        "support_conversations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("external_id", sa.String(length=200), nullable=False),
        sa.Column("customer_id", sa.Uuid(), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "bot",
                "handed_off",
                "closed",
                name="conversation_status",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("last_intent", sa.String(length=100), nullable=True),
        sa.Column("repeated_turns", sa.Integer(), nullable=False),
        sa.Column(
            "slots", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column(
            "channel_data", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["support_customers.id"],
            name=op.f("fk_support_conversations_customer_id_support_customers"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_support_conversations")),
        sa.UniqueConstraint(
            "channel", "external_id", name=op.f("uq_support_conversations_channel_external_id")
        ),
    )
    with op.batch_alter_table("support_conversations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_support_conversations_customer_id"), ["customer_id"], unique=False
        )

    op.create_table(
        "support_examples",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("intent_id", sa.Uuid(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("text_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "source",
            sa.Enum(
                "catalogue",
                "review",
                name="example_source",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["intent_id"],
            ["support_intents.id"],
            name=op.f("fk_support_examples_intent_id_support_intents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_support_examples")),
        sa.UniqueConstraint(
            "intent_id", "text_hash", name=op.f("uq_support_examples_intent_id_text_hash")
        ),
    )
    with op.batch_alter_table("support_examples", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_support_examples_intent_id"), ["intent_id"], unique=False
        )

    op.create_table(
        "support_messages",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("external_id", sa.String(length=200), nullable=True),
        sa.Column(
            "role",
            sa.Enum(
                "customer",
                "bot",
                name="message_role",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("intent", sa.String(length=100), nullable=True),
        sa.Column("confidence", sa.Double(), nullable=True),
        sa.Column(
            "alternatives", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("handoff", sa.Boolean(), nullable=False),
        sa.Column("handoff_reason", sa.String(length=64), nullable=True),
        sa.Column("reply", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True),
        sa.Column("model_version_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["support_conversations.id"],
            name=op.f("fk_support_messages_conversation_id_support_conversations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_support_messages_model_version_id_model_versions"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_support_messages")),
        sa.UniqueConstraint(
            "conversation_id",
            "external_id",
            name=op.f("uq_support_messages_conversation_id_external_id"),
        ),
    )
    with op.batch_alter_table("support_messages", schema=None) as batch_op:
        batch_op.create_index(
            "ix_support_messages_conversation_created",
            ["conversation_id", "created_at"],
            unique=False,
        )

    op.create_table(
        "support_review_items",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "labelled",
                "dismissed",
                name="review_status",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("label_intent_id", sa.Uuid(), nullable=True),
        sa.Column("reviewer", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["label_intent_id"],
            ["support_intents.id"],
            name=op.f("fk_support_review_items_label_intent_id_support_intents"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["support_messages.id"],
            name=op.f("fk_support_review_items_message_id_support_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_support_review_items")),
        sa.UniqueConstraint("message_id", name=op.f("uq_support_review_items_message_id")),
    )
    with op.batch_alter_table("support_review_items", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_support_review_items_status"), ["status"], unique=False
        )


def downgrade() -> None:

    with op.batch_alter_table("support_review_items", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_support_review_items_status"))

    op.drop_table("support_review_items")
    with op.batch_alter_table("support_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_support_messages_conversation_created")

    op.drop_table("support_messages")
    with op.batch_alter_table("support_examples", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_support_examples_intent_id"))

    op.drop_table("support_examples")
    with op.batch_alter_table("support_conversations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_support_conversations_customer_id"))

    op.drop_table("support_conversations")
    op.drop_table("support_intents")
    op.drop_table("support_customers")
