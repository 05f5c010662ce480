"""What the subcommands share: settings, a database session, and failing with a message."""

from __future__ import annotations

import sys
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import make_url
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import Session

from core.logs import configure_logging
from core.settings import Settings, get_settings
from core.storage import get_session_factory, session_scope


def settings() -> Settings:
    current = get_settings()
    configure_logging(current)
    return current


def fail(message: str, code: int = 1) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@contextmanager
def database(current: Settings) -> Iterator[Session]:
    """A committing session; a database that is down or not migrated fails with advice."""
    factory = get_session_factory(current.database_url)
    with database_errors(current), session_scope(factory) as session:
        yield session


@contextmanager
def database_errors(current: Settings) -> Iterator[None]:
    """Fail with advice where the database is down or not migrated."""
    shown = make_url(current.database_url).render_as_string(hide_password=True)
    try:
        yield
    except (OperationalError, ProgrammingError) as exc:
        fail(
            f"database {shown!r} is unreachable or not migrated ({exc.orig}); "
            "check TEXTSUITE_DATABASE_URL and run `textsuite migrate`"
        )
    except OSError as exc:  # a SQLite file in a folder that cannot be made
        fail(f"cannot open the database {shown!r}: {exc}; check TEXTSUITE_DATABASE_URL")


# Piped or redirected output has no width; rich would assume 80 columns and cut cells short.
PIPED_WIDTH = 240


def output() -> Console:
    """Where a command prints tables: as wide as the terminal, or `PIPED_WIDTH` when the
    output goes to a file or another program."""
    return Console(width=None if sys.stdout.isatty() else PIPED_WIDTH)


def id_table(*columns: str, whole: Collection[str] = ("id",)) -> Table:
    """A table whose `whole` columns never wrap or shorten: the ids other commands take back
    (a UUID needs 36 characters, even on an 80-column terminal). The other columns wrap,
    long words included, rather than end in an ellipsis."""
    table = Table()
    for column in columns:
        if column in whole:
            table.add_column(column, no_wrap=True, min_width=36 if column == "id" else None)
        else:
            table.add_column(column, overflow="fold")
    return table
