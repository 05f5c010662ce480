"""sentiment tables

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 16:00:00.733528
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sentiment_dead_letters",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("stream", sa.String(length=200), nullable=False),
        sa.Column("message_id", sa.String(length=64), nullable=False),
        sa.Column(
            "payload", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("deliveries", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sentiment_dead_letters")),
        sa.UniqueConstraint(
            "stream", "message_id", name=op.f("uq_sentiment_dead_letters_stream_message_id")
        ),
    )
    op.create_table(
        "sentiment_entities",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("ticker", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column(
            "aliases", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("sector", sa.String(length=100), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sentiment_entities")),
        sa.UniqueConstraint("ticker", name=op.f("uq_sentiment_entities_ticker")),
    )
    op.create_table(
        "sentiment_feeds",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("etag", sa.String(length=500), nullable=True),
        sa.Column("modified", sa.String(length=100), nullable=True),
        sa.Column("last_polled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sentiment_feeds")),
        sa.UniqueConstraint("url", name=op.f("uq_sentiment_feeds_url")),
    )
    op.create_table(
        "sentiment_webhooks",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("secret", sa.String(length=200), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sentiment_webhooks")),
        sa.UniqueConstraint("url", name=op.f("uq_sentiment_webhooks_url")),
    )
    op.create_table(
        "sentiment_rules",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("entity_id", sa.Uuid(), nullable=True),
        sa.Column(
            "kind",
            sa.Enum(
                "negative_share",
                "z_score",
                "volume_spike",
                name="rule_kind",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("window_s", sa.Integer(), nullable=False),
        sa.Column("threshold", sa.Double(), nullable=False),
        sa.Column("min_articles", sa.Integer(), nullable=False),
        sa.Column("for_s", sa.Integer(), nullable=False),
        sa.Column("cooldown_s", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["entity_id"],
            ["sentiment_entities.id"],
            name=op.f("fk_sentiment_rules_entity_id_sentiment_entities"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sentiment_rules")),
        sa.UniqueConstraint("name", "entity_id", name=op.f("uq_sentiment_rules_name_entity_id")),
    )
    with op.batch_alter_table("sentiment_rules", schema=None) as batch_op:
        batch_op.create_index(
            "uq_sentiment_rules_global_name",
            ["name"],
            unique=True,
            postgresql_where=sa.text("entity_id IS NULL"),
            sqlite_where=sa.text("entity_id IS NULL"),
        )
    op.create_table(
        "sentiment_alerts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("entity_id", sa.Uuid(), nullable=False),
        sa.Column("rule_id", sa.Uuid(), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "pending",
                "firing",
                "resolved",
                name="alert_state",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("threshold", sa.Double(), nullable=False),
        sa.Column(
            "details", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_by", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["entity_id"],
            ["sentiment_entities.id"],
            name=op.f("fk_sentiment_alerts_entity_id_sentiment_entities"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["rule_id"],
            ["sentiment_rules.id"],
            name=op.f("fk_sentiment_alerts_rule_id_sentiment_rules"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sentiment_alerts")),
    )
    with op.batch_alter_table("sentiment_alerts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_sentiment_alerts_entity_id"), ["entity_id"], unique=False
        )
        batch_op.create_index("ix_sentiment_alerts_updated_at", ["updated_at"], unique=False)
        batch_op.create_index(
            "uq_sentiment_alerts_open",
            ["entity_id", "rule_id"],
            unique=True,
            postgresql_where=sa.text("state IN ('pending', 'firing')"),
            sqlite_where=sa.text("state IN ('pending', 'firing')"),
        )

    op.create_table(
        "sentiment_articles",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("source", sa.String(length=100), nullable=False),
        sa.Column("external_id", sa.String(length=300), nullable=True),
        sa.Column("url", sa.String(length=2000), nullable=True),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("label", sa.String(length=16), nullable=True),
        sa.Column(
            "probabilities", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True
        ),
        sa.Column("score", sa.Double(), nullable=True),
        sa.Column("model_version_id", sa.Uuid(), nullable=True),
        sa.Column("scored_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_sentiment_articles_model_version_id_model_versions"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sentiment_articles")),
        sa.UniqueConstraint("content_hash", name=op.f("uq_sentiment_articles_content_hash")),
        sa.UniqueConstraint(
            "source", "external_id", name=op.f("uq_sentiment_articles_source_external_id")
        ),
        sa.UniqueConstraint("url", name=op.f("uq_sentiment_articles_url")),
    )
    with op.batch_alter_table("sentiment_articles", schema=None) as batch_op:
        batch_op.create_index("ix_sentiment_articles_published_at", ["published_at"], unique=False)

    op.create_table(
        "sentiment_article_entities",
        sa.Column("article_id", sa.Uuid(), nullable=False),
        sa.Column("entity_id", sa.Uuid(), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["article_id"],
            ["sentiment_articles.id"],
            name=op.f("fk_sentiment_article_entities_article_id_sentiment_articles"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["entity_id"],
            ["sentiment_entities.id"],
            name=op.f("fk_sentiment_article_entities_entity_id_sentiment_entities"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "article_id", "entity_id", name=op.f("pk_sentiment_article_entities")
        ),
    )
    with op.batch_alter_table("sentiment_article_entities", schema=None) as batch_op:
        batch_op.create_index(
            "ix_sentiment_article_entities_entity", ["entity_id", "article_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("sentiment_article_entities", schema=None) as batch_op:
        batch_op.drop_index("ix_sentiment_article_entities_entity")

    op.drop_table("sentiment_article_entities")
    with op.batch_alter_table("sentiment_articles", schema=None) as batch_op:
        batch_op.drop_index("ix_sentiment_articles_published_at")

    op.drop_table("sentiment_articles")
    with op.batch_alter_table("sentiment_alerts", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_sentiment_alerts_open",
            postgresql_where=sa.text("state IN ('pending', 'firing')"),
            sqlite_where=sa.text("state IN ('pending', 'firing')"),
        )
        batch_op.drop_index("ix_sentiment_alerts_updated_at")
        batch_op.drop_index(batch_op.f("ix_sentiment_alerts_entity_id"))

    op.drop_table("sentiment_alerts")
    with op.batch_alter_table("sentiment_rules", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_sentiment_rules_global_name",
            postgresql_where=sa.text("entity_id IS NULL"),
            sqlite_where=sa.text("entity_id IS NULL"),
        )
    op.drop_table("sentiment_rules")
    op.drop_table("sentiment_webhooks")
    op.drop_table("sentiment_feeds")
    op.drop_table("sentiment_entities")
    op.drop_table("sentiment_dead_letters")
