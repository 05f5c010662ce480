from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

import tests.workers.sample_tasks  # noqa: F401 - declares the tasks used here
from core.settings import Settings
from core.storage.models import Job
from tests.conftest import REPO_ROOT, _truncate, make_settings
from workers.dispatch import CeleryDispatcher, create_dispatcher

SAMPLE_TASKS = "tests.workers.sample_tasks"


def wait_for_job(
    factory: sessionmaker[Session],
    job_id: uuid.UUID | str,
    timeout_s: float = 30.0,
    until: Any = None,
) -> Job:
    """Poll the database until the job is finished (or `until(job)` holds)."""
    deadline = time.monotonic() + timeout_s
    job_uuid = uuid.UUID(str(job_id))
    while True:
        with factory() as session:
            job = session.get(Job, job_uuid)
        done = until(job) if until else job is not None and job.status.finished
        if done:
            return job
        if time.monotonic() > deadline:
            status = job.status if job else "missing"
            pytest.fail(f"job {job_id} did not finish within {timeout_s}s (status {status})")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def worker_settings(
    postgres_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    return make_settings(
        database_url=postgres_url,
        broker_url=redis_url,
        worker_imports=[SAMPLE_TASKS],
        artifacts_dir=tmp_path_factory.mktemp("artifacts"),
    )


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a `textsuite` process on `settings`, plus `TEXTSUITE_*` extras."""
    return {
        **os.environ,
        "TEXTSUITE_DATABASE_URL": settings.database_url,
        "TEXTSUITE_BROKER_URL": str(settings.broker_url),
        "TEXTSUITE_WORKER_IMPORTS": json.dumps([SAMPLE_TASKS]),
        "TEXTSUITE_ARTIFACTS_DIR": str(settings.artifacts_dir),
        "PYTHONPATH": str(REPO_ROOT),
        **{f"TEXTSUITE_{name.upper()}": value for name, value in extra.items()},
    }


@contextlib.contextmanager
def textsuite_process(
    settings: Settings, log: Path, *command: str, **env: str
) -> Iterator[subprocess.Popen[bytes]]:
    """`textsuite COMMAND...` in its own process; a worker is yielded once it answers a ping.
    Terminated (killed if it must be) at the end."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "textsuite", *command],
            cwd=REPO_ROOT,
            env=worker_env(settings, **env),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        if command[0] == "worker":
            dispatcher = create_dispatcher(settings)
            assert isinstance(dispatcher, CeleryDispatcher)
            deadline = time.monotonic() + 60
            while not dispatcher.celery.control.ping(timeout=0.5):
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"worker did not start:\n{log.read_text()[-3000:]}")
            dispatcher.close()
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def celery_worker(
    worker_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[subprocess.Popen[bytes]]:
    """`textsuite worker` in its own process, consuming every queue as on one machine."""
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    queues = ("--queues", "default,gpu,inference")
    with textsuite_process(worker_settings, log, "worker", *queues) as process:
        yield process


@pytest.fixture
def dispatcher(worker_settings: Settings, celery_worker) -> Iterator[CeleryDispatcher]:
    dispatcher = create_dispatcher(worker_settings)
    assert isinstance(dispatcher, CeleryDispatcher)
    yield dispatcher
    dispatcher.close()
    _truncate(worker_settings.database_url)
