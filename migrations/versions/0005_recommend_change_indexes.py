"""recommender: indexes for the service's periodic change reads

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 22:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_recommend_items_updated_at", "recommend_items", ["updated_at"], unique=False
    )
    op.create_index(
        "ix_recommend_item_embeddings_encoder_created",
        "recommend_item_embeddings",
        ["encoder", "created_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_recommend_item_embeddings_encoder_created", "recommend_item_embeddings")
    op.drop_index("ix_recommend_items_updated_at", "recommend_items")
