"""Celery workers that reliability tests start and kill, and the questions they ask of jobs:
has the worker started, is the job running, how did it end and how many times was its work
done."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil

from core.settings import Settings
from core.storage.engine import get_session_factory
from core.storage.models import Job, JobStatus
from tests.conftest import REPO_ROOT
from tests.workers.conftest import SAMPLE_TASKS, wait_for_job
from workers.dispatch import CeleryDispatcher

WORKER = [sys.executable, "-m", "textsuite", "worker"]


class Workers:
    """`textsuite worker` processes started (and killed) by a test."""

    def __init__(self, settings: Settings, logs: Path) -> None:
        self.settings, self.logs = settings, logs
        self.started: list[subprocess.Popen[bytes]] = []

    def start(
        self, queues: str = "default", pool: str = "prefork", *options: str
    ) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "TEXTSUITE_DATABASE_URL": self.settings.database_url,
            "TEXTSUITE_BROKER_URL": str(self.settings.broker_url),
            "TEXTSUITE_WORKER_IMPORTS": json.dumps([SAMPLE_TASKS]),
            "TEXTSUITE_ARTIFACTS_DIR": str(self.settings.artifacts_dir),
            "TEXTSUITE_JOB_LEASE_S": str(self.settings.job_lease_s),
            "TEXTSUITE_JOB_TIME_LIMIT_S": str(self.settings.job_time_limit_s),
            "TEXTSUITE_BROKER_VISIBILITY_TIMEOUT_S": str(self.settings.broker_visibility_timeout_s),
            "PYTHONPATH": str(REPO_ROOT),
        }
        log = self.logs / f"worker-{len(self.started)}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [*WORKER, "--queues", queues, "--pool", pool, "--concurrency", "1", *options],
                cwd=REPO_ROOT,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        self.started.append(process)
        return process

    def pool_children(self, worker: subprocess.Popen[bytes]) -> list[psutil.Process]:
        return psutil.Process(worker.pid).children(recursive=True)

    def kill_all(self, worker: subprocess.Popen[bytes]) -> None:
        victims = [psutil.Process(worker.pid), *self.pool_children(worker)]
        for victim in victims:
            victim.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)

    def stop(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


def wait_until_ready(dispatcher: CeleryDispatcher, worker: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while not dispatcher.celery.control.ping(timeout=0.5):
        assert worker.poll() is None, "the worker exited at start-up"
        assert time.monotonic() < deadline, "the worker did not start"


def wait_until_running(settings: Settings, job_id: uuid.UUID) -> Job:
    return wait_for_job(
        get_session_factory(settings.database_url),
        job_id,
        timeout_s=60,
        until=lambda job: job is not None and job.status is JobStatus.RUNNING,
    )


def outcome(settings: Settings, job_id: uuid.UUID, out: Path) -> tuple[Job, int]:
    """The finished job, and how many times its work was really done (lines written)."""
    job = wait_for_job(get_session_factory(settings.database_url), job_id, timeout_s=90)
    return job, len(out.read_text().splitlines()) if out.exists() else 0


def report(scenario: str, results: list[tuple[Job, int]]) -> tuple[int, int]:
    lost = sum(job.status is not JobStatus.SUCCEEDED or done == 0 for job, done in results)
    duplicated = sum(done > 1 for _, done in results)
    print(f"\n{scenario}: {len(results)} runs, {lost} lost, {duplicated} duplicated")
    for job, done in results:
        if job.status is not JobStatus.SUCCEEDED or done != 1:
            print(
                f"  job {job.id}: {job.status.value}, {job.attempts} attempts, done {done} times,"
                f" error {job.error!r}"
            )
    return lost, duplicated
