"""the entries each feed's last fetch listed

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 00:30:00

A feed lists an entry for days. Its poller now hands the ingestor only the entries the last
fetch did not list, so an article retention deleted is not stored again from a feed that
still lists it (nor an undated entry, which retention's filter cannot tell old).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sentiment_feeds") as table:
        table.add_column(
            sa.Column(
                "entry_keys",
                sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
                nullable=False,
                server_default=sa.text("'[]'"),
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("sentiment_feeds") as table:
        table.drop_column("entry_keys")
