from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

import tests.workers.sample_tasks  # noqa: F401 - declares the tasks used here
from core.storage.models import Job, JobStatus

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


__all__ = ["SAMPLE_TASKS", "JobStatus", "wait_for_job"]
