"""Scheduled retraining decisions and where the periodic work runs (`core.scheduling`)."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core import jobs
from core.scheduling import periodic, retrain_check_s, retrain_if_due
from core.settings import Scheduler, SettingsError, load_settings
from core.storage.base import utcnow
from core.storage.engine import session_scope
from core.storage.models import Job, JobStatus, TrainingRun
from tests.conftest import make_settings

KIND = "support.train"


class TrainParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    arguments: dict[str, Any] = {}
    promotion: str = "if-not-worse"


class Broker:
    """The broker boundary: records the jobs it is sent."""

    def __init__(self) -> None:
        self.sent: list[uuid.UUID] = []

    def spec_for(self, kind: str) -> jobs.JobKindSpec:
        return jobs.JobKindSpec("gpu", TrainParams)

    def dispatch(self, job_id: uuid.UUID, kind: str, queue: str) -> None:
        self.sent.append(job_id)


class Data:
    """The app's side: the fingerprint of what a run with given parameters would train on."""

    def __init__(self, fingerprint: str | None) -> None:
        self.fingerprint = fingerprint
        self.asked: list[Mapping[str, Any]] = []

    def __call__(self, params: Mapping[str, Any]) -> str | None:
        self.asked.append(params)
        return self.fingerprint


def check(factory: sessionmaker[Session], broker: Broker, data: Data, every_h: float = 24.0):
    return retrain_if_due(
        factory,
        broker,
        model_name="support-intents",
        kind=KIND,
        every_s=every_h * 3600,
        fingerprint=data,
    )


def add_run(
    factory: sessionmaker[Session],
    fingerprint: str,
    *,
    hours_ago: float,
    params: dict[str, Any] | None = None,
    job_params: dict[str, Any] | None = None,
    job_kind: str = KIND,
    status: JobStatus = JobStatus.SUCCEEDED,
) -> None:
    started = utcnow() - dt.timedelta(hours=hours_ago)
    with session_scope(factory) as session:
        job = None
        if job_params is not None:
            job = Job(kind=job_kind, queue="gpu", status=status, params=job_params,
                      created_at=started)  # fmt: skip
            session.add(job)
            session.flush()
        session.add(
            TrainingRun(
                job_id=job.id if job else None,
                model_name="support-intents",
                base_model="all-MiniLM-L6-v2",
                params=params or {"epochs": 4, "seed": 42},
                data_fingerprint=fingerprint,
                status=status,
                created_at=started,
            )
        )


def age_jobs(factory: sessionmaker[Session], hours: float) -> None:
    with session_scope(factory) as session:
        for job in session.scalars(select(Job)):
            job.created_at -= dt.timedelta(hours=hours)


def test_a_model_never_trained_is_trained_once(session_factory: sessionmaker[Session]) -> None:
    broker, data = Broker(), Data("a")
    first = check(session_factory, broker, data)
    assert first.job_id is not None and broker.sent == [first.job_id]
    with session_factory() as session:
        job = session.get(Job, first.job_id)
    assert (job.kind, job.status, job.params) == (
        KIND,
        JobStatus.QUEUED,
        {"arguments": {}, "promotion": "if-not-worse"},
    )
    again = check(session_factory, broker, data)
    assert again.job_id is None and "is queued or running" in again.reason
    assert broker.sent == [first.job_id]


def test_a_recent_run_waits_out_the_period_before_the_data_is_even_read(
    session_factory: sessionmaker[Session],
) -> None:
    add_run(session_factory, "a", hours_ago=2)
    broker, data = Broker(), Data("b")
    result = check(session_factory, broker, data, every_h=24)
    assert result.job_id is None and "last training started 2.0 h ago" in result.reason
    assert data.asked == [] and broker.sent == []


def test_unchanged_data_waits_and_changed_data_trains_with_the_last_jobs_recipe(
    session_factory: sessionmaker[Session],
) -> None:
    recipe = {"arguments": {"strategy": "sentence", "epochs": 3}, "promotion": "never"}
    add_run(session_factory, "a", hours_ago=30, job_params=recipe)
    broker = Broker()
    same = check(session_factory, broker, Data("a"))
    assert same.job_id is None and same.reason == "no new training data since the last run"
    changed = Data("b")
    result = check(session_factory, broker, changed)
    assert result.job_id is not None and broker.sent == [result.job_id]
    expected = {"arguments": {"strategy": "sentence", "epochs": 3}, "promotion": "if-not-worse"}
    assert changed.asked == [expected]  # the fingerprint is of what that recipe trains on
    with session_factory() as session:
        assert session.get(Job, result.job_id).params == expected


def test_a_run_made_outside_a_job_lends_its_training_arguments(
    session_factory: sessionmaker[Session],
) -> None:
    add_run(session_factory, "a", hours_ago=30, params={"epochs": 2, "seed": 7})
    data = Data("b")
    result = check(session_factory, Broker(), data)
    assert result.job_id is not None
    assert data.asked == [{"arguments": {"epochs": 2, "seed": 7}, "promotion": "if-not-worse"}]


def test_too_little_data_queues_nothing(session_factory: sessionmaker[Session]) -> None:
    broker = Broker()
    result = check(session_factory, broker, Data(None))
    assert result.job_id is None and result.reason == "too little training data yet"
    with session_factory() as session:
        assert session.scalars(select(Job)).all() == []


def test_a_job_that_failed_before_its_run_is_tried_again_a_period_later_not_at_every_check(
    session_factory: sessionmaker[Session],
) -> None:
    """A job that failed before it recorded a run (the base model missing, too few pairs)
    still counts as the last training: data that keeps changing gets one job a period."""
    broker = Broker()
    first = check(session_factory, broker, Data("a"))
    jobs.fail_job(session_factory, first.job_id, "the base model is missing on this worker")
    soon = check(session_factory, broker, Data("b"))
    assert soon.job_id is None and "last training started 0.0 h ago" in soon.reason
    age_jobs(session_factory, hours=25)
    later = check(session_factory, broker, Data("c"))
    assert later.job_id is not None and broker.sent == [first.job_id, later.job_id]


def test_a_failed_run_is_retried_a_period_later_with_the_recipe_that_last_succeeded(
    session_factory: sessionmaker[Session],
) -> None:
    good = {"arguments": {"epochs": 3}, "promotion": "if-not-worse"}
    add_run(session_factory, "a", hours_ago=60, job_params=good)
    add_run(session_factory, "b", hours_ago=30, job_params={"arguments": {"max_length": 4096}},
            status=JobStatus.FAILED)  # fmt: skip
    data = Data("b")  # the data the failed run was on
    retried = check(session_factory, Broker(), data)
    assert retried.job_id is not None and data.asked == [good]


def test_a_run_of_another_kind_of_job_lends_its_arguments_not_its_job(
    session_factory: sessionmaker[Session],
) -> None:
    other = {"model_name": "support-intents", "data_path": "x.csv"}
    add_run(session_factory, "a", hours_ago=30, params={"epochs": 2},
            job_kind="core.train_classifier", job_params=other)  # fmt: skip
    data = Data("b")
    assert check(session_factory, Broker(), data).job_id is not None
    assert data.asked == [{"arguments": {"epochs": 2}, "promotion": "if-not-worse"}]


def test_processes_checking_at_once_queue_one_job_even_when_the_data_moves_between(
    session_factory: sessionmaker[Session],
) -> None:
    broker = Broker()
    inner: list[Any] = []

    def meanwhile(params: Mapping[str, Any]) -> str:
        if not inner:  # another process checks while this one reads the data
            inner.append(check(session_factory, broker, Data("newer")))
        return "older"

    outer = retrain_if_due(session_factory, broker, model_name="support-intents", kind=KIND,
                           every_s=3600, fingerprint=meanwhile)  # fmt: skip
    assert inner[0].job_id is not None and outer.job_id is None
    assert outer.reason == "another process queued the retraining just now"
    assert broker.sent == [inner[0].job_id]


def test_the_check_comes_a_quarter_period_after_at_most_hourly() -> None:
    assert retrain_check_s(3600) == 900
    assert retrain_check_s(24 * 3600) == 3600


@pytest.mark.parametrize("scheduler", [Scheduler.API, Scheduler.BEAT])
def test_periodic_work_runs_in_this_process_only_under_the_api_scheduler(
    scheduler: Scheduler,
) -> None:
    settings = make_settings(scheduler=scheduler, broker_url="redis://127.0.0.1:6379/15")
    ran = threading.Event()

    async def serve_for_a_while() -> None:
        async with periodic(settings, {"tick": (0.01, ran.set)}):
            await asyncio.sleep(0.3)

    asyncio.run(serve_for_a_while())
    assert ran.is_set() is (scheduler is Scheduler.API)


def test_a_failing_round_is_logged_and_the_next_one_runs(caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings()
    rounds: list[int] = []

    def flaky() -> None:
        rounds.append(len(rounds))
        if len(rounds) == 1:
            raise ConnectionError("the database is away")

    async def serve_for_a_while() -> None:
        async with periodic(settings, {"flaky work": (0.01, flaky)}):
            await asyncio.sleep(0.3)

    def runs(outcome: str) -> float:
        sample = REGISTRY.get_sample_value(
            "textsuite_periodic_runs_total", {"work": "flaky work", "outcome": outcome}
        )
        return sample or 0.0

    before = time.time()
    asyncio.run(serve_for_a_while())
    assert len(rounds) >= 2
    assert "flaky work failed, trying again in 0 s: the database is away" in caplog.text
    assert (runs("failed"), runs("ok")) == (1, len(rounds) - 1)
    last = REGISTRY.get_sample_value(
        "textsuite_periodic_last_success_timestamp_seconds", {"work": "flaky work"}
    )
    assert last is not None and last >= before


def test_the_beat_scheduler_needs_a_broker() -> None:
    with pytest.raises(SettingsError, match="set TEXTSUITE_BROKER_URL"):
        load_settings(_env_file=None, scheduler="beat")
    assert load_settings(_env_file=None, scheduler="beat", broker_url="redis://r:6379/0")


def test_an_hourly_round_comes_first_soon_after_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """API processes restarted more often than hourly (rolling deploys) still run the hourly
    work: its first round comes within `FIRST_ROUND_MAX_S`, then every period."""
    import core.scheduling as scheduling

    monkeypatch.setattr(scheduling, "FIRST_ROUND_MAX_S", 0.05)  # a minute, scaled down
    rounds: list[float] = []
    started = time.monotonic()

    async def serve_for_a_while() -> None:
        work = lambda: rounds.append(time.monotonic() - started)  # noqa: E731
        async with periodic(make_settings(), {"hourly": (3600.0, work)}):
            await asyncio.sleep(0.5)

    asyncio.run(serve_for_a_while())
    assert len(rounds) == 1 and rounds[0] < 0.5  # the first; the next is an hour away
