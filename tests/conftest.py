"""Shared fixtures: real SQLite and PostgreSQL databases, real Redis, settings, API clients, and
a real browser.

Services come from `TEXTSUITE_TEST_POSTGRES_URL` and `TEXTSUITE_TEST_REDIS_URL` (defaults: the
local servers), the browser from `TEXTSUITE_TEST_CHROMIUM` (default: Debian's Chromium). When
one is missing, its tests skip on a developer machine and FAIL under CI
(`CI` set), so CI can never pass without exercising them.
"""

from __future__ import annotations

import logging
import os

# No test may download a model: only packaged models and folders the tests build.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Services under test compute the recommender's behaviour in process: a spawned process per
# test client would cost seconds each. tests/apps/recommend/test_api.py covers the process path.
os.environ.setdefault("TEXTSUITE_RECOMMEND_BEHAVIOUR_PROCESS", "false")
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

import migrations
from core.settings import Settings, load_settings
from core.storage.base import Base
from core.storage.engine import get_engine, get_session_factory

POSTGRES_URL = os.environ.get(
    "TEXTSUITE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("TEXTSUITE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
CHROMIUM = Path(os.environ.get("TEXTSUITE_TEST_CHROMIUM", "/usr/bin/chromium"))
REPO_ROOT = Path(__file__).resolve().parent.parent


def service_missing(name: str, reason: str) -> None:
    """Skip locally, fail in CI: a test that needs a service never passes without it."""
    message = f"{name} unavailable: {reason}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(message)


def make_settings(**overrides: Any) -> Settings:
    """Settings for a test: nothing read from a developer's `.env`, state under `var_dir`."""
    overrides.setdefault("log_format", "console")
    return load_settings(_env_file=None, **overrides)


@pytest.fixture(autouse=True)
def _restore_root_logging() -> Iterator[None]:
    """The app factory routes every logger to its own handler on the stderr of the moment;
    put pytest's handlers back afterwards so later tests never write to a closed capture."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


# --- PostgreSQL -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session, dropped at the end."""
    server = make_url(POSTGRES_URL)
    admin = create_engine(server, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    try:
        with admin.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        admin.dispose()
        service_missing("PostgreSQL", f"{server.render_as_string(hide_password=True)}: {exc}")
    name = f"textsuite_test_{uuid.uuid4().hex[:10]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = server.set(database=name).render_as_string(hide_password=False)
    migrations.upgrade(url)
    yield url
    get_engine(url).dispose()
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


# --- SQLite -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test (faster than migrating each time)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    migrations.upgrade(f"sqlite:///{path}")
    get_engine(f"sqlite:///{path}").dispose()
    return path


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "textsuite.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


# --- Either backend ---------------------------------------------------------------------------


def _truncate(url: str) -> None:
    engine = get_engine(url)
    with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A migrated database on each backend; PostgreSQL tables are emptied after the test."""
    if request.param == "sqlite":
        yield request.getfixturevalue("sqlite_url")
        return
    url = request.getfixturevalue("postgres_url")
    try:
        yield url
    finally:
        _truncate(url)


@pytest.fixture
def db_session(database_url: str) -> Iterator[Session]:
    """A session inside a transaction that is rolled back after the test."""
    engine = get_engine(database_url)
    with engine.connect() as connection:
        transaction = connection.begin()
        session = Session(bind=connection, join_transaction_mode="create_savepoint")
        try:
            yield session
        finally:
            session.close()
            transaction.rollback()


@pytest.fixture
def session_factory(database_url: str):
    return get_session_factory(database_url)


# --- Redis ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        service_missing("Redis", f"{REDIS_URL}: {exc}")
    client.flushdb()
    yield REDIS_URL
    client.flushdb()
    client.close()


# --- The browser ------------------------------------------------------------------------------


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium through Playwright: the system's build, never a downloaded one."""
    if not CHROMIUM.exists():
        service_missing("Chromium", f"{CHROMIUM} not found (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--headless", "--no-sandbox"]
        )
        yield browser
        browser.close()


# --- The HTTP service -------------------------------------------------------------------------


@pytest.fixture
def service_settings(sqlite_url: str, tmp_path: Path) -> Settings:
    """Embedded defaults: SQLite and in-process jobs."""
    return make_settings(
        database_url=sqlite_url, var_dir=tmp_path / "var", artifacts_dir=tmp_path / "artifacts"
    )


@pytest.fixture
def client(service_settings: Settings) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from textsuite.service import create_service

    with TestClient(create_service(service_settings)) as test_client:
        yield test_client


@pytest.fixture
def api_key(service_settings: Settings):
    """`api_key("support", ...)` stores a key with those scopes and returns its clear text."""
    from core.security import create_api_key
    from core.storage.engine import session_scope

    def make(*scopes: str) -> str:
        with session_scope(get_session_factory(service_settings.database_url)) as session:
            return create_api_key(session, "test", scopes)[1]

    return make
