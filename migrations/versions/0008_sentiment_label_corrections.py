"""sentiment: analysts' label corrections

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 22:30:00

An analyst's label for an article the model read wrong, one per article: shown beside the
model's label and learnt by the next training run.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sentiment_label_corrections",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("article_id", sa.Uuid(), nullable=False),
        sa.Column("label", sa.String(length=16), nullable=False),
        sa.Column("analyst", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["article_id"],
            ["sentiment_articles.id"],
            name=op.f("fk_sentiment_label_corrections_article_id_sentiment_articles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sentiment_label_corrections")),
        sa.UniqueConstraint("article_id", name=op.f("uq_sentiment_label_corrections_article_id")),
    )


def downgrade() -> None:
    op.drop_table("sentiment_label_corrections")
