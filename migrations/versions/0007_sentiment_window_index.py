"""sentiment: indexes for the alert windows' reads

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 05:00:00

The windows ask for an entity's articles published in the last week and an hour. With the
index on (entity_id, article_id) that read visited every article the entity was ever linked
to; on (entity_id, published_at, article_id) it visits only the week it asks for, and the
join to the articles comes from the index itself. An ingestor that keeps the histories
between batches then reads only the articles scored since its last read, by `scored_at`.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_sentiment_article_entities_entity_published",
        "sentiment_article_entities",
        ["entity_id", "published_at", "article_id"],
        unique=False,
    )
    op.drop_index("ix_sentiment_article_entities_entity", "sentiment_article_entities")
    op.create_index(
        "ix_sentiment_articles_scored_at", "sentiment_articles", ["scored_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_sentiment_articles_scored_at", "sentiment_articles")
    op.create_index(
        "ix_sentiment_article_entities_entity",
        "sentiment_article_entities",
        ["entity_id", "article_id"],
        unique=False,
    )
    op.drop_index("ix_sentiment_article_entities_entity_published", "sentiment_article_entities")
