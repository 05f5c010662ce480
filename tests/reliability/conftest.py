"""The service the reliability tests attack: the whole API on a private SQLite database, an
admin key, and jobs recorded instead of run."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import migrations
from core.jobs import JobDispatcher, JobKindSpec
from core.security import create_api_key
from core.settings import Settings
from core.storage.engine import get_session_factory, session_scope
from tests.conftest import _truncate, make_settings
from tests.reliability.workers import Workers
from tests.workers.conftest import SAMPLE_TASKS
from textsuite.service import create_service
from workers.dispatch import CeleryDispatcher, create_dispatcher


class RecordingDispatcher:
    """The real job kinds and their parameter checks; dispatch only records."""

    def __init__(self, real: JobDispatcher) -> None:
        self.real = real
        self.dispatched: list[tuple[uuid.UUID, str, str]] = []

    def spec_for(self, kind: str) -> JobKindSpec:
        return self.real.spec_for(kind)

    def dispatch(self, job_id: uuid.UUID, kind: str, queue: str) -> None:
        self.dispatched.append((job_id, kind, queue))


def _serve(url: str, folder: Path) -> Iterator[tuple[TestClient, str]]:
    service_settings = make_settings(
        database_url=url,
        var_dir=folder / "var",
        artifacts_dir=folder / "artifacts",
        rate_limit_per_s=0,  # thousands of requests from one key: every one must reach its route
    )
    with session_scope(get_session_factory(url)) as session:
        key = create_api_key(session, "fuzz", ["admin"])[1]
    dispatcher = RecordingDispatcher(create_dispatcher(service_settings))
    app = create_service(service_settings, dispatcher=dispatcher)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, key


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str]]:
    """A client of the running service (raising no server exceptions: a 500 is an answer to
    check) and an admin key."""
    folder: Path = tmp_path_factory.mktemp("target")
    url = f"sqlite:///{folder / 'fuzz.db'}"
    migrations.upgrade(url)
    yield from _serve(url, folder)


@pytest.fixture(scope="module")
def postgres_target(
    postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TestClient, str]]:
    """The same on PostgreSQL, which refuses some values SQLite stores (NUL characters)."""
    yield from _serve(postgres_url, tmp_path_factory.mktemp("postgres-target"))
    _truncate(postgres_url)


# --- real workers, killed by the tests (test_worker_kill, test_broker_loss) ----------------------


@pytest.fixture
def kill_settings(postgres_url: str, redis_url: str, tmp_path: Path) -> Iterator[Settings]:
    yield make_settings(
        database_url=postgres_url,
        broker_url=redis_url,
        worker_imports=[SAMPLE_TASKS],
        artifacts_dir=tmp_path / "artifacts",
        job_lease_s=2,  # a dead worker's job may be taken over 2 s after its last heartbeat
        job_time_limit_s=6,
        broker_visibility_timeout_s=8,  # Redis gives an unacknowledged message back after 8 s
    )


@pytest.fixture
def workers(kill_settings: Settings, tmp_path: Path) -> Iterator[Workers]:
    started = Workers(kill_settings, tmp_path)
    yield started
    started.stop()


@pytest.fixture
def dispatcher(kill_settings: Settings) -> Iterator[CeleryDispatcher]:
    dispatcher = create_dispatcher(kill_settings)
    assert isinstance(dispatcher, CeleryDispatcher)
    yield dispatcher
    dispatcher.close()
