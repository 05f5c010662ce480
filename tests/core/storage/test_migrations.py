"""Migrations run on both backends, round-trip, and describe exactly what the models declare."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

import migrations
from core.storage.base import Base
from core.storage.engine import get_engine

CORE_TABLES = {"api_keys", "jobs", "training_runs", "model_versions"}


def _tables(url: str) -> set[str]:
    return set(inspect(get_engine(url)).get_table_names()) - {"alembic_version"}


def test_models_match_migrations(database_url: str) -> None:
    with get_engine(database_url).connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_round_trip(database_url: str) -> None:
    assert _tables(database_url) >= CORE_TABLES
    assert migrations.current_revision(database_url) == migrations.head_revision()

    migrations.downgrade(database_url, "base")
    get_engine(database_url).dispose()
    assert _tables(database_url) == set()
    assert migrations.current_revision(database_url) is None
    with pytest.raises(RuntimeError, match="run `textsuite migrate`"):
        migrations.check_at_head(database_url)

    migrations.upgrade(database_url)
    assert _tables(database_url) >= CORE_TABLES
    migrations.check_at_head(database_url)
