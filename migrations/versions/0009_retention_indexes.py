"""indexes for data retention and the reports

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 23:00:00

Retention deletes support conversations idle since a time and served recommendation lists
older than a time, hourly and in batches; without these indexes each batch would scan the
whole table (the lists' log gains a row per request). The sentiment report reads the articles
received and the alerts started in a period.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_support_conversations_updated_at", "support_conversations", ["updated_at"])
    op.create_index(
        "ix_recommend_recommendations_created_at", "recommend_recommendations", ["created_at"]
    )
    op.create_index("ix_sentiment_articles_received_at", "sentiment_articles", ["received_at"])
    op.create_index("ix_sentiment_alerts_started_at", "sentiment_alerts", ["started_at"])


def downgrade() -> None:
    op.drop_index("ix_sentiment_alerts_started_at", "sentiment_alerts")
    op.drop_index("ix_sentiment_articles_received_at", "sentiment_articles")
    op.drop_index("ix_recommend_recommendations_created_at", "recommend_recommendations")
    op.drop_index("ix_support_conversations_updated_at", "support_conversations")
