"""`TEXTSUITE_SCHEDULER=beat`: a real `textsuite beat` queues the periodic work and a real
`default` worker does it, against PostgreSQL and Redis."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from pathlib import Path

import pytest
import redis
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from apps.support.catalogue import create_intent
from core.scheduling import retrain_check_s
from core.settings import Settings
from core.storage.engine import get_session_factory, session_scope
from core.storage.models import Job, JobStatus
from tests.conftest import _truncate, make_settings
from tests.workers.conftest import textsuite_process, wait_for_job

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

RETRAIN_EVERY_H = 0.001  # 3.6 s: a check every 0.9 s
PERIODIC = {
    "scheduler": "beat",
    "job_redispatch_after_s": "1",
    "support_retrain_every_h": str(RETRAIN_EVERY_H),
}


LONG_AGO = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)


def lost_job(factory: sessionmaker[Session]) -> uuid.UUID:
    """A queued job whose message was lost: never sent, untouched for minutes."""
    with session_scope(factory) as session:
        lost = Job(kind="core.worker_info", queue="default", status=JobStatus.QUEUED, params={})
        session.add(lost)
        session.flush()
        session.execute(update(Job).where(Job.id == lost.id).values(updated_at=LONG_AGO))
        return lost.id


def test_beat_queues_the_periodic_work_and_a_default_worker_does_it(
    worker_settings: Settings, tmp_path: Path
) -> None:
    factory = get_session_factory(worker_settings.database_url)
    lost_id = lost_job(factory)
    with session_scope(factory) as session:  # a catalogue no model was trained on
        create_intent(session, "order_status", answer="...", examples=["where is my order"])
        create_intent(session, "cancel_order", answer="...", examples=["cancel my order"])
    assert retrain_check_s(RETRAIN_EVERY_H * 3600) < 1
    try:
        with (
            textsuite_process(
                worker_settings, tmp_path / "worker.log", "worker", "--queues", "default",
                **PERIODIC,
            ),
            textsuite_process(worker_settings, tmp_path / "beat.log", "beat", **PERIODIC) as beat,
        ):  # fmt: skip
            # The beat sends `job redispatch` every 0.5 s; the worker sends the job again.
            done = wait_for_job(factory, lost_id, timeout_s=60)
            assert done.status is JobStatus.SUCCEEDED, done.error
            assert done.result["packages"]["celery"]
            # The worker's retraining check queued a training job for the gpu queue (no gpu
            # worker here, so it waits there), once.
            deadline = time.monotonic() + 60
            while True:
                with factory() as session:
                    training = session.scalars(select(Job).where(Job.kind == "support.train")).all()
                if training or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert beat.poll() is None, (tmp_path / "beat.log").read_text()[-3000:]
            time.sleep(2)  # two more checks: the job is queued already
        with factory() as session:
            training = session.scalars(select(Job).where(Job.kind == "support.train")).all()
        assert [(job.queue, job.status) for job in training] == [("gpu", JobStatus.QUEUED)]
        assert training[0].params == {"arguments": {}, "promotion": "if-not-worse"}
        schedule = (tmp_path / "beat.log").read_text()
        for line in ("every 0.5 s: job redispatch", "every 60 s: alert sweep",
                     "every 0.9 s: support retraining"):  # fmt: skip
            assert line in schedule
    finally:
        _truncate(worker_settings.database_url)
        # The training job's message waits on the gpu queue: no later worker should get it.
        redis.Redis.from_url(str(worker_settings.broker_url)).flushdb()


@pytest.mark.parametrize("scheduler", ["api", "beat"])
def test_the_api_processes_leave_the_periodic_work_to_beat(
    sqlite_url: str, redis_url: str, tmp_path: Path, scheduler: str
) -> None:
    """Under `api` a service sends lost jobs again itself (touching them); under `beat` it
    runs no timers of its own and leaves them to the beat's workers."""
    from fastapi.testclient import TestClient

    from textsuite.service import create_service

    settings = make_settings(
        database_url=sqlite_url,
        broker_url=redis_url,
        scheduler=scheduler,
        job_redispatch_after_s=0.2,
        var_dir=tmp_path / "var",
        artifacts_dir=tmp_path / "artifacts",
    )
    factory = get_session_factory(sqlite_url)
    lost_id = lost_job(factory)
    with TestClient(create_service(settings)):
        time.sleep(1.5)
    with factory() as session:
        touched = session.get(Job, lost_id).updated_at > LONG_AGO
    assert touched is (scheduler == "api")
    redis.Redis.from_url(redis_url).flushdb()  # the message the api sent: no worker is here


def test_a_worker_declares_every_periodic_task_and_beat_schedules_what_its_settings_turn_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A tick for work that the worker's own settings turn off is logged and dropped, never
    refused as an unknown task (which Celery would discard with an error)."""
    from workers.celery_app import create_celery_app
    from workers.periodic import ALL_WORK, task_name

    settings = make_settings(broker_url="redis://127.0.0.1:6379/15", scheduler="beat")
    app = create_celery_app(settings, periodic=True)
    assert {task_name(name) for name in ALL_WORK} <= set(app.tasks)
    assert set(app.conf.beat_schedule) == {
        "job redispatch",
        "alert sweep",
        "feed polling",
        "recommender embedding sweep",
    }
    app.tasks[task_name("support retraining")]()
    assert "beat sent 'support retraining', which this worker's settings turn off" in caplog.text


def test_beat_sends_each_periodic_tick_within_a_minute_of_its_start() -> None:
    """Not one whole period later: retention and the embedding sweep (hourly, every 15 min)
    under a beat restarted more often than that would never run."""
    from celery.beat import Scheduler

    from core.scheduling import FIRST_ROUND_MAX_S
    from workers.celery_app import create_celery_app

    settings = make_settings(broker_url="redis://127.0.0.1:6379/15", scheduler="beat")
    app = create_celery_app(settings, periodic=True)
    scheduler = Scheduler(app, lazy=True)
    scheduler.setup_schedule()
    waits = {name: entry.is_due()[1] for name, entry in scheduler.schedule.items()}
    assert set(app.conf.beat_schedule) <= set(waits)
    assert all(0 <= waits[name] <= FIRST_ROUND_MAX_S + 1 for name in app.conf.beat_schedule), waits
