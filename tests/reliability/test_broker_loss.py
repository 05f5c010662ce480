"""The Celery broker (Redis) restarting without persistence loses every queued job message.
The jobs themselves live in the database, so nothing is lost for good: the API sends again
the jobs left queued with no message (`TEXTSUITE_JOB_REDISPATCH_AFTER_S`), and a worker runs
them once."""

from __future__ import annotations

import time
from pathlib import Path

import redis
from fastapi.testclient import TestClient

from core.jobs import submit_job
from core.settings import Settings
from core.storage.engine import get_session_factory
from core.storage.models import Job, JobStatus
from tests.reliability.workers import Workers, outcome, report, wait_until_ready
from textsuite.service import create_service
from workers.dispatch import CeleryDispatcher

LOST = 3


def test_jobs_whose_messages_the_broker_lost_are_sent_again_and_run_once(
    kill_settings: Settings,
    workers: Workers,
    dispatcher: CeleryDispatcher,
    tmp_path: Path,
) -> None:
    factory = get_session_factory(kill_settings.database_url)
    outputs = [tmp_path / f"lost-{n}.txt" for n in range(LOST)]
    submitted = [
        submit_job(factory, dispatcher, "tests.append_line", {"path": str(out), "sleep_s": 0})[0]
        for out in outputs
    ]
    broker = redis.Redis.from_url(str(kill_settings.broker_url))
    broker.flushdb()  # Redis restarted with nothing on disk: every queued message is gone
    broker.close()
    worker = workers.start()
    wait_until_ready(dispatcher, worker)
    time.sleep(2.0)
    with factory() as session:
        waiting = [session.get(Job, job.id).status for job in submitted]
    assert waiting == [JobStatus.QUEUED] * LOST  # nothing will ever run them by itself

    service = kill_settings.model_copy(update={"job_redispatch_after_s": 1.0})
    with TestClient(create_service(service)):  # an API process: it checks for stalled jobs
        results = [
            outcome(kill_settings, job.id, out) for job, out in zip(submitted, outputs, strict=True)
        ]
    assert report("broker lost its queue", results) == (0, 0)
    assert [job.attempts for job, _ in results] == [1] * LOST
