"""jobs can be cancelled

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 16:30:00

A queued or retrying job that is cancelled ends `cancelled` at once; a running one is marked
`cancel_requested_at` and stops at its next progress report. Training runs stopped that way end
`cancelled` too.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BEFORE = ("queued", "running", "retrying", "succeeded", "failed")
AFTER = (*BEFORE, "cancelled")
# table: its status CHECK constraint (named by the metadata's naming convention)
CHECKS = {"jobs": "ck_jobs_job_status", "training_runs": "ck_training_runs_training_run_status"}


def _allow(statuses: Sequence[str]) -> None:
    listed = ", ".join(f"'{status}'" for status in statuses)
    for table_name, check in CHECKS.items():
        with op.batch_alter_table(table_name) as table:
            table.drop_constraint(op.f(check), type_="check")
            table.create_check_constraint(op.f(check), sa.text(f"status IN ({listed})"))


def upgrade() -> None:
    _allow(AFTER)
    with op.batch_alter_table("jobs") as table:
        table.add_column(sa.Column("cancel_requested_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    for table_name in CHECKS:
        op.execute(sa.text(f"UPDATE {table_name} SET status = 'failed' WHERE status = 'cancelled'"))
    with op.batch_alter_table("jobs") as table:
        table.drop_column("cancel_requested_at")
    _allow(BEFORE)
