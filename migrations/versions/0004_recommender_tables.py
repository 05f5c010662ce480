"""recommender tables

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 18:33:20.041655
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "recommend_items",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("external_id", sa.String(length=200), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column(
            "tags",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=False,
        ),
        sa.Column("category", sa.String(length=200), nullable=True),
        sa.Column("series", sa.String(length=200), nullable=True),
        sa.Column(
            "attributes",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=False,
        ),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("text_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recommend_items")),
        sa.UniqueConstraint("external_id", name=op.f("uq_recommend_items_external_id")),
    )
    with op.batch_alter_table("recommend_items", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_recommend_items_category"), ["category"], unique=False)

    op.create_table(
        "recommend_recommendations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "user",
                "similar",
                "query",
                name="recommend_kind",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("user_id", sa.String(length=200), nullable=True),
        sa.Column(
            "request",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "items",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=False,
        ),
        sa.Column("encoder", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recommend_recommendations")),
    )
    with op.batch_alter_table("recommend_recommendations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_recommend_recommendations_user_id"), ["user_id"], unique=False
        )

    op.create_table(
        "recommend_interactions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.Column("user_id", sa.String(length=200), nullable=False),
        sa.Column("item_id", sa.Uuid(), nullable=False),
        sa.Column(
            "type",
            sa.Enum(
                "view",
                "click",
                "cart",
                "purchase",
                "rating",
                name="recommend_event_type",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recommendation_id", sa.Uuid(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["item_id"],
            ["recommend_items.id"],
            name=op.f("fk_recommend_interactions_item_id_recommend_items"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["recommendation_id"],
            ["recommend_recommendations.id"],
            name=op.f("fk_recommend_interactions_recommendation_id_recommend_recommendations"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recommend_interactions")),
        sa.UniqueConstraint("event_id", name=op.f("uq_recommend_interactions_event_id")),
    )
    with op.batch_alter_table("recommend_interactions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_recommend_interactions_item_id"), ["item_id"], unique=False
        )
        batch_op.create_index(
            "ix_recommend_interactions_occurred_at", ["occurred_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_recommend_interactions_recommendation_id"),
            ["recommendation_id"],
            unique=False,
        )
        batch_op.create_index(
            "ix_recommend_interactions_user_time", ["user_id", "occurred_at"], unique=False
        )

    op.create_table(
        "recommend_item_embeddings",
        sa.Column("item_id", sa.Uuid(), nullable=False),
        sa.Column("encoder", sa.String(length=200), nullable=False),
        sa.Column("text_hash", sa.String(length=64), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["item_id"],
            ["recommend_items.id"],
            name=op.f("fk_recommend_item_embeddings_item_id_recommend_items"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("item_id", "encoder", name=op.f("pk_recommend_item_embeddings")),
    )


def downgrade() -> None:
    op.drop_table("recommend_item_embeddings")
    with op.batch_alter_table("recommend_interactions", schema=None) as batch_op:
        batch_op.drop_index("ix_recommend_interactions_user_time")
        batch_op.drop_index(batch_op.f("ix_recommend_interactions_recommendation_id"))
        batch_op.drop_index("ix_recommend_interactions_occurred_at")
        batch_op.drop_index(batch_op.f("ix_recommend_interactions_item_id"))

    op.drop_table("recommend_interactions")
    with op.batch_alter_table("recommend_recommendations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_recommend_recommendations_user_id"))

    op.drop_table("recommend_recommendations")
    with op.batch_alter_table("recommend_items", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_recommend_items_category"))

    op.drop_table("recommend_items")
