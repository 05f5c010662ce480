"""A real Celery worker process on the real Redis broker, writing to real PostgreSQL."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from core.jobs import submit_job
from core.settings import Settings
from core.storage.engine import get_session_factory
from core.storage.models import JobStatus
from tests.workers.conftest import wait_for_job
from textsuite.service import create_service

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def test_api_job_runs_on_the_worker_and_lands_in_postgres(
    worker_settings: Settings, dispatcher, tmp_path: Path
) -> None:
    from core.security import create_api_key
    from core.storage.engine import session_scope

    factory = get_session_factory(worker_settings.database_url)
    with session_scope(factory) as session:
        key = create_api_key(session, "test", ["admin"])[1]
    out = tmp_path / "out.txt"
    with TestClient(create_service(worker_settings)) as client:
        assert client.get("/readyz").json()["checks"]["broker"] == "ok"
        response = client.post(
            "/v1/jobs",
            json={"kind": "tests.append_line", "params": {"path": str(out)}},
            headers={"X-API-Key": key},
        )
        assert response.status_code == 202, response.text
        job = wait_for_job(factory, response.json()["id"])
        shown = client.get(f"/v1/jobs/{job.id}", headers={"X-API-Key": key}).json()
    assert job.status is JobStatus.SUCCEEDED, job.error
    assert job.result == {"lines": 1}
    assert job.worker and str(os.getpid()) not in job.worker.split(":")[1]
    assert shown["status"] == "succeeded"


def test_gpu_queue_jobs_reach_the_gpu_worker(worker_settings: Settings, dispatcher) -> None:
    factory = get_session_factory(worker_settings.database_url)
    job, _ = submit_job(factory, dispatcher, "tests.gpu_echo", {"value": [1, 2]})
    assert job.queue == "gpu"
    done = wait_for_job(factory, job.id)
    assert (done.status, done.result) == (JobStatus.SUCCEEDED, {"echo": [1, 2]})


def test_the_worker_is_named_after_its_queues(dispatcher) -> None:
    """Not Celery's `celery@host`, which every worker on a host would share."""
    [reply] = dispatcher.celery.control.ping(timeout=2)
    [node] = reply
    assert node.split("@")[0] == "default-gpu-inference", node


def test_a_raising_task_records_failed_with_the_reason(
    worker_settings: Settings, dispatcher
) -> None:
    factory = get_session_factory(worker_settings.database_url)
    job, _ = submit_job(factory, dispatcher, "tests.fail", {"row": 3})
    done = wait_for_job(factory, job.id)
    assert done.status is JobStatus.FAILED
    assert done.error == "ValueError: cannot parse row 3: expected 3 columns"


def test_transient_failure_is_retried_through_the_broker(
    worker_settings: Settings, dispatcher, tmp_path: Path
) -> None:
    factory = get_session_factory(worker_settings.database_url)
    attempts = tmp_path / "attempts.txt"
    job, _ = submit_job(
        factory, dispatcher, "tests.flaky", {"path": str(attempts), "succeed_on": 2}
    )
    done = wait_for_job(factory, job.id)
    assert done.status is JobStatus.SUCCEEDED and done.attempts == 2


def test_a_job_delivered_twice_does_its_work_once(
    worker_settings: Settings, dispatcher, tmp_path: Path
) -> None:
    factory = get_session_factory(worker_settings.database_url)
    out = tmp_path / "out.txt"
    params = {"path": str(out), "sleep_s": 0.2}
    job, _ = submit_job(factory, dispatcher, "tests.append_line", params, idempotency_key="order-9")
    again, created = submit_job(
        factory, dispatcher, "tests.append_line", params, idempotency_key="order-9"
    )
    assert again.id == job.id and not created
    dispatcher.dispatch(job.id, job.kind, job.queue)  # the broker redelivers the same message
    wait_for_job(factory, job.id)
    # Same queue, so FIFO: once this runs, the worker has handled the duplicate delivery.
    follow_up, _ = submit_job(
        factory, dispatcher, "tests.append_line", {"path": str(tmp_path / "b")}
    )
    wait_for_job(factory, follow_up.id)
    assert len(out.read_text().splitlines()) == 1
