"""Engine and session factories, cached per database URL (never created at import)."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, Select, Table, create_engine, delete, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    # WAL lets the API read while an in-process job writes; busy_timeout waits for the lock.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def create_database_engine(url: str, **kwargs: Any) -> Engine:
    """A new engine for `url` with the options each backend needs."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False}, **kwargs)
        event.listen(engine, "connect", _on_sqlite_connect)
        return engine
    # pre_ping replaces connections that a database restart broke, without a service restart.
    options: dict[str, Any] = {"pool_pre_ping": True, "connect_args": {"connect_timeout": 5}}
    if "poolclass" not in kwargs:
        options.update(pool_size=10, max_overflow=20)
    return create_engine(url, **options, **kwargs)


@functools.lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    """The process's engine for `url`; one pool per database."""
    return create_database_engine(url)


@functools.lru_cache(maxsize=8)
def get_session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(url), expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with factory() as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


T = TypeVar("T")

# Values bound in one `IN (...)` list at most: SQLite (3.32 and later) takes 32,766 variables
# a statement, PostgreSQL's protocol 65,535.
IN_LIST_MAX = 5_000


def in_slices(values: Iterable[T], size: int = IN_LIST_MAX) -> Iterator[tuple[T, ...]]:
    """`values` in slices short enough for one `IN (...)` on every database."""
    remaining = iter(values)
    while chunk := tuple(islice(remaining, size)):
        yield chunk


def upsert_statement(session: Session, table: Any) -> Any:
    """`INSERT` for the session's database that takes `.on_conflict_do_update(...)` and
    `.excluded` (PostgreSQL and SQLite): an insert-or-replace in one statement, safe when
    another transaction writes the same key at the same time."""
    dialects = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}
    return dialects[session.get_bind().dialect.name](table)


def delete_in_batches(
    factory: sessionmaker[Session], ids: Select[tuple[Any]], table: Table, batch: int = 1000
) -> int:
    """Delete the rows of `table` whose `id` the query `ids` selects, `batch` at a time, each
    batch in a transaction of its own (no long lock on a busy table). The query runs inside
    each DELETE, so a row that stopped matching meanwhile (written to again) stays. Returns
    how many rows this call deleted."""
    deleted = 0
    while True:
        with session_scope(factory) as session:
            chosen = ids.limit(batch).scalar_subquery()
            gone = session.execute(delete(table).where(table.c.id.in_(chosen))).rowcount  # type: ignore[attr-defined]
        if not gone:
            return deleted
        deleted += gone
