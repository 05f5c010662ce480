"""Embedded mode: no broker, the same tasks run on threads of the serving process."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from core.jobs import submit_job
from core.storage.engine import get_session_factory
from core.storage.models import Job, JobStatus
from tests.conftest import make_settings
from tests.workers.conftest import SAMPLE_TASKS, wait_for_job
from textsuite.service import create_service
from workers.celery_app import create_celery_app
from workers.dispatch import InProcessDispatcher, create_dispatcher


@pytest.fixture
def settings(sqlite_url: str, tmp_path: Path):
    return make_settings(database_url=sqlite_url, worker_imports=[SAMPLE_TASKS])


def test_without_a_broker_jobs_run_in_process(settings) -> None:
    assert isinstance(create_dispatcher(settings), InProcessDispatcher)


def test_job_submitted_over_the_api_runs_and_lands_in_the_database(
    settings, api_key, tmp_path: Path
) -> None:
    out = tmp_path / "out.txt"
    with TestClient(create_service(settings)) as client:
        headers = {"X-API-Key": api_key("admin")}
        response = client.post(
            "/v1/jobs",
            json={"kind": "tests.append_line", "params": {"path": str(out)}},
            headers=headers,
        )
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "queued"
        job = wait_for_job(get_session_factory(settings.database_url), response.json()["id"])
        assert job.status is JobStatus.SUCCEEDED
        assert job.result == {"lines": 1}
        assert job.progress == 1.0 and job.attempts == 1
        shown = client.get(f"/v1/jobs/{job.id}", headers=headers).json()
        assert shown["status"] == "succeeded" and shown["result"] == {"lines": 1}
        assert shown["worker"].count(":") == 2 and shown["heartbeat_at"]  # who ran it, when
    assert out.read_text().strip() == str(job.id)


def test_a_raising_task_records_failed_with_the_reason(settings) -> None:
    factory = get_session_factory(settings.database_url)
    dispatcher = create_dispatcher(settings)
    job, _ = submit_job(factory, dispatcher, "tests.fail", {"row": 12})
    done = wait_for_job(factory, job.id)
    dispatcher.close()
    assert done.status is JobStatus.FAILED
    assert done.error == "ValueError: cannot parse row 12: expected 3 columns"
    assert done.finished_at is not None


def test_transient_errors_are_retried_then_succeed(settings, tmp_path: Path) -> None:
    factory = get_session_factory(settings.database_url)
    dispatcher = create_dispatcher(settings)
    attempts = tmp_path / "attempts.txt"
    job, _ = submit_job(
        factory, dispatcher, "tests.flaky", {"path": str(attempts), "succeed_on": 3}
    )
    done = wait_for_job(factory, job.id)
    dispatcher.close()
    assert done.status is JobStatus.SUCCEEDED
    assert done.result == {"attempts": 3}
    assert done.attempts == 3


def test_retries_give_up_with_the_reason(settings, tmp_path: Path) -> None:
    factory = get_session_factory(settings.database_url)
    dispatcher = create_dispatcher(settings)
    attempts = tmp_path / "attempts.txt"
    job, _ = submit_job(
        factory, dispatcher, "tests.flaky", {"path": str(attempts), "succeed_on": 99}
    )
    done = wait_for_job(factory, job.id)
    dispatcher.close()
    assert done.status is JobStatus.FAILED
    assert "helpdesk unreachable (attempt 4)" in done.error
    assert "gave up after 4 attempts" in done.error
    assert len(attempts.read_text().splitlines()) == 4


def test_a_job_delivered_twice_does_its_work_once(settings, tmp_path: Path) -> None:
    factory = get_session_factory(settings.database_url)
    dispatcher = create_dispatcher(settings)
    out = tmp_path / "out.txt"
    job, _ = submit_job(
        factory, dispatcher, "tests.append_line", {"path": str(out), "sleep_s": 0.3}
    )
    dispatcher.dispatch(job.id, job.kind, job.queue)  # a duplicate delivery while it runs
    wait_for_job(factory, job.id)
    dispatcher.dispatch(job.id, job.kind, job.queue)  # and another after it finished
    dispatcher.close()
    assert len(out.read_text().splitlines()) == 1


def test_same_idempotency_key_runs_once(settings, tmp_path: Path) -> None:
    factory = get_session_factory(settings.database_url)
    dispatcher = create_dispatcher(settings)
    out = tmp_path / "out.txt"
    params = {"path": str(out)}
    first, _ = submit_job(factory, dispatcher, "tests.append_line", params, idempotency_key="k")
    second, created = submit_job(
        factory, dispatcher, "tests.append_line", params, idempotency_key="k"
    )
    wait_for_job(factory, first.id)
    dispatcher.close()
    assert second.id == first.id and not created
    assert len(out.read_text().splitlines()) == 1


def test_short_model_work_does_not_wait_behind_a_training_job(settings, tmp_path: Path) -> None:
    factory = get_session_factory(settings.database_url)
    dispatcher = create_dispatcher(settings)
    release = tmp_path / "release"
    try:
        training, _ = submit_job(factory, dispatcher, "tests.gpu_hold", {"until": str(release)})
        wait_for_job(factory, training.id, until=lambda job: job.status is JobStatus.RUNNING)
        short, _ = submit_job(factory, dispatcher, "tests.inference_echo", {"value": 7})
        done = wait_for_job(factory, short.id, timeout_s=10)
        assert done.status is JobStatus.SUCCEEDED and done.result == {"echo": 7}
        with factory() as session:
            assert session.get(Job, training.id).status is JobStatus.RUNNING  # still holding
        release.touch()
        assert wait_for_job(factory, training.id).result == {"released": True}
    finally:
        release.touch()
        dispatcher.close()


def test_every_declared_task_is_registered_with_its_queue(settings) -> None:
    celery = create_celery_app(settings)
    assert celery.tasks["tests.gpu_echo"].queue == "gpu"
    assert celery.tasks["recommend.embed"].queue == "inference"
    assert celery.tasks["recommend.train"].queue == "gpu"
    assert celery.tasks["core.worker_info"].queue == "default"
    assert celery.conf.task_acks_late and celery.conf.task_reject_on_worker_lost
    assert celery.conf.worker_prefetch_multiplier == 1
    visibility = celery.conf.broker_transport_options["visibility_timeout"]
    assert visibility > celery.conf.task_time_limit


@pytest.mark.timeout(20)  # closing must not wait out the 30-s backoff
def test_a_job_backing_off_holds_no_thread_and_stays_retrying_at_shutdown(
    sqlite_url: str, tmp_path: Path
) -> None:
    settings = make_settings(
        database_url=sqlite_url, worker_imports=[SAMPLE_TASKS], inprocess_job_threads=1
    )
    factory = get_session_factory(settings.database_url)
    dispatcher = create_dispatcher(settings)
    waiting, _ = submit_job(factory, dispatcher, "tests.unreachable")
    wait_for_job(factory, waiting.id, until=lambda job: job.status is JobStatus.RETRYING)
    out = tmp_path / "out.txt"
    other, _ = submit_job(factory, dispatcher, "tests.append_line", {"path": str(out)})
    assert wait_for_job(factory, other.id).status is JobStatus.SUCCEEDED  # the one thread
    dispatcher.close()
    with factory() as session:
        left = session.get(Job, waiting.id)
    # Not lost: the next process sends it again (core.jobs.redispatch_stalled).
    assert (left.status, left.attempts) == (JobStatus.RETRYING, 1)
    assert "connection refused" in left.error


@pytest.mark.timeout(30)
def test_closing_with_a_drain_lets_queued_jobs_run_first(settings, tmp_path: Path) -> None:
    """A command that raised alerts (`sentiment replay`) lets their notifications go out
    before it exits; a plain close leaves queued jobs to the next process."""
    factory = get_session_factory(settings.database_url)
    release = tmp_path / "release"
    jobs = []
    for drain_s in (0.0, 10.0):
        dispatcher = create_dispatcher(settings)
        holding, _ = submit_job(factory, dispatcher, "tests.gpu_hold", {"until": str(release)})
        wait_for_job(factory, holding.id, until=lambda job: job.status is JobStatus.RUNNING)
        queued, _ = submit_job(factory, dispatcher, "tests.gpu_echo", {"value": drain_s})
        threading.Timer(0.5, release.touch).start()  # the running job ends a moment later
        left = dispatcher.close(drain_s=drain_s)
        release.unlink()
        with factory() as session:
            jobs.append((left, session.get(Job, queued.id).status))
    assert jobs == [(1, JobStatus.QUEUED), (0, JobStatus.SUCCEEDED)]
