"""Alembic environment: metadata from the models, URL from the config or the settings."""

from __future__ import annotations

from alembic import context
from sqlalchemy import pool

import apps.recommend.models  # registers the recommender tables
import apps.sentiment.models  # registers the sentiment tables
import apps.support.models  # noqa: F401 - registers the support tables
import core.storage.models  # noqa: F401 - registers the core tables on Base.metadata
from core.settings import get_settings
from core.storage.base import Base, UTCDateTime
from core.storage.engine import create_database_engine

target_metadata = Base.metadata


def _url() -> str:
    return context.config.get_main_option("sqlalchemy.url") or get_settings().database_url


def _render_item(type_: str, obj: object, autogen_context: object) -> str | bool:
    # Migrations spell plain SQL types, so they never import code that may change later.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=_url().startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    engine = create_database_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
            render_item=_render_item,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
