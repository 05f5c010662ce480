"""Periodic work: the loop an API process runs it in, and scheduled retraining.

Each piece of periodic work (resolving quiet alerts, polling feeds, sending again jobs whose
message was lost, checking whether a model is due for retraining) is one function that is safe
to run from any number of processes at once. `TEXTSUITE_SCHEDULER` says who calls it: every
API process on its own timer (`repeat`, the default), or `textsuite beat`, which queues it as a
Celery task for the workers (`workers.periodic`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import hashlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.jobs import (
    IdempotencyConflict,
    JobDispatcher,
    redispatch_every_s,
    redispatch_lost_jobs,
    submit_job,
)
from core.metrics import PERIODIC_LAST_SUCCESS, PERIODIC_RUNS
from core.ml.runs import PromotionPolicy
from core.settings import Scheduler, Settings
from core.storage.base import utcnow
from core.storage.models import Job, JobStatus, TrainingRun

log = logging.getLogger(__name__)

RETRAIN_CHECK_MAX_S = 3600.0
FIRST_ROUND_MAX_S = 60.0  # a process's first round of any periodic work, at the latest
REDISPATCH_WORK = "job redispatch"
PeriodicWork = tuple[float, Callable[[], object]]  # every so many seconds, do this
IF_NOT_WORSE = PromotionPolicy.IF_NOT_WORSE.value


async def repeat(
    what: str, every_s: float, work: Callable[[], object], *, first_s: float | None = None
) -> None:
    """Run `work` (blocking; in a thread) every `every_s` seconds, the first time after
    `first_s` (default: one period, at most `FIRST_ROUND_MAX_S`: an hourly round in API
    processes restarted more often than hourly would otherwise never run), for as long as the
    task lives. A failure (the database or the broker away) is logged and the next round
    tries again."""
    wait = min(every_s, FIRST_ROUND_MAX_S) if first_s is None else first_s
    while True:
        await asyncio.sleep(wait)
        wait = every_s
        try:
            await asyncio.to_thread(run_periodic, what, work)
        except Exception as exc:
            log.warning("%s failed, trying again in %.0f s: %s", what, every_s, exc)


def run_periodic(what: str, work: Callable[[], object]) -> None:
    """One round of the periodic work `what`, counted in the metrics (by an API process's
    timer, or by a worker's task under beat); a failure is counted and raised."""
    try:
        work()
    except Exception:
        PERIODIC_RUNS.labels(what, "failed").inc()
        raise
    PERIODIC_RUNS.labels(what, "ok").inc()
    PERIODIC_LAST_SUCCESS.labels(what).set_to_current_time()


@asynccontextmanager
async def periodic(settings: Settings, works: Mapping[str, PeriodicWork]) -> AsyncIterator[None]:
    """Run each of `works` (name -> (every_s, work)) on its own timer in this process while
    the context lasts, where `TEXTSUITE_SCHEDULER=api`; under `beat` nothing runs here."""
    tasks = []
    if settings.scheduler is Scheduler.API:
        tasks = [
            asyncio.create_task(repeat(name, every_s, work), name=name)
            for name, (every_s, work) in works.items()
        ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def redispatch_work(
    settings: Settings, factory: sessionmaker[Session], dispatcher: JobDispatcher
) -> dict[str, PeriodicWork]:
    """Sending again the jobs whose message was lost, where `job_redispatch_after_s` is set."""
    if settings.job_redispatch_after_s <= 0:
        return {}
    work = functools.partial(redispatch_lost_jobs, settings, factory, dispatcher)
    return {REDISPATCH_WORK: (redispatch_every_s(settings), work)}


@dataclass(frozen=True)
class Retraining:
    """One model's scheduled retraining: what `retrain_if_due` needs besides a dispatcher."""

    work_name: str  # as periodic work
    model_name: str
    kind: str  # the training job
    every_h: float  # 0: off
    factory: sessionmaker[Session]
    fingerprint: Callable[[Mapping[str, Any]], str | None]

    def check(self, dispatcher: JobDispatcher) -> RetrainCheck:
        """One check now (`retrain_if_due`)."""
        return retrain_if_due(
            self.factory,
            dispatcher,
            model_name=self.model_name,
            kind=self.kind,
            every_s=self.every_h * 3600,
            fingerprint=self.fingerprint,
        )

    def work(self, dispatcher: JobDispatcher) -> dict[str, PeriodicWork]:
        """The check as periodic work (`retrain_check_s`), where `every_h` is set."""
        if self.every_h <= 0:
            return {}
        check = functools.partial(self.check, dispatcher)
        return {self.work_name: (retrain_check_s(self.every_h * 3600), check)}


RETENTION_EVERY_S = 3600.0


@dataclass(frozen=True)
class Retention:
    """Deleting what is older than `days` (0: keep everything), once an hour."""

    work_name: str  # as periodic work
    days: float
    purge: Callable[[dt.datetime], int]  # deletes what is older than a time; how many

    def run(self) -> int:
        deleted = self.purge(utcnow() - dt.timedelta(days=self.days))
        if deleted:
            log.info("%s: deleted %d rows older than %g days", self.work_name, deleted, self.days)
        return deleted

    def work(self) -> dict[str, PeriodicWork]:
        return {self.work_name: (RETENTION_EVERY_S, self.run)} if self.days > 0 else {}


def retrain_check_s(every_s: float) -> float:
    """How often a process checks whether a model retrained every `every_s` is due: a quarter
    of the period, at most hourly (a run starts at most that late)."""
    return min(every_s / 4, RETRAIN_CHECK_MAX_S)


@dataclass(frozen=True)
class RetrainCheck:
    """What one scheduled-retraining check did: `job_id` of the job it queued, else why not."""

    model_name: str
    job_id: uuid.UUID | None
    reason: str


def retrain_if_due(
    factory: sessionmaker[Session],
    dispatcher: JobDispatcher,
    *,
    model_name: str,
    kind: str,
    every_s: float,
    fingerprint: Callable[[Mapping[str, Any]], str | None],
) -> RetrainCheck:
    """Queue a `kind` training job for `model_name` if it is due.

    Due when the model's last training (its newest run, or newest `kind` job, whichever is
    later, whatever came of it) started `every_s` ago or more, no `kind` job is queued or
    running, and the data a run would train on now differs from that of the newest run that
    succeeded (`fingerprint(params)`: the fingerprint a run with those job parameters records;
    computed last, only when the rest holds; None when there is too little data to train on
    yet). So unchanged data is never trained again, and a run that failed is tried again a
    period later, not at every check.

    The job repeats the recipe of the newest run that succeeded (`_recipe`), promoted only if
    not worse than production. Its idempotency key names the newest run and job, not the
    data, so processes checking at the same moment queue one job between them even when new
    data arrives while they compute the fingerprint.
    """
    with factory() as session:
        runs = select(TrainingRun).where(TrainingRun.model_name == model_name)
        newest = runs.order_by(TrainingRun.created_at.desc()).limit(1)
        latest = session.scalars(newest).first()
        succeeded = session.scalars(newest.where(TrainingRun.status == JobStatus.SUCCEEDED)).first()
        last_job = session.scalars(
            select(Job).where(Job.kind == kind).order_by(Job.created_at.desc()).limit(1)
        ).first()
        busy = session.scalar(
            select(Job.id)
            .where(
                Job.kind == kind,
                Job.status.in_(JobStatus.unfinished()),
            )
            .limit(1)
        )
        if busy is not None:
            return RetrainCheck(model_name, None, f"training job {busy} is queued or running")
        started = [item.created_at for item in (latest, last_job) if item is not None]
        if started:
            age = utcnow() - max(started)
            if age < dt.timedelta(seconds=every_s):
                return RetrainCheck(
                    model_name,
                    None,
                    f"the last training started {_hours(age.total_seconds())} ago; "
                    f"retrained every {_hours(every_s)}",
                )
        params = _recipe(session, succeeded, kind)
    current = fingerprint(params)
    if current is None:
        return RetrainCheck(model_name, None, "too little training data yet")
    if succeeded is not None and succeeded.data_fingerprint == current:
        return RetrainCheck(model_name, None, "no new training data since the last run")
    after = f"{model_name}|{latest.id if latest else None}|{last_job.id if last_job else None}"
    key = "retrain:" + hashlib.sha256(after.encode()).hexdigest()
    try:
        job, created = submit_job(
            factory, dispatcher, kind, params, idempotency_key=key, dispatch_later_if_down=True
        )
    except IdempotencyConflict:  # another process queued it with another recipe just now
        created = False
    if not created:
        return RetrainCheck(model_name, None, "another process queued the retraining just now")
    log.info("scheduled retraining of %s: job %s queued (the data changed)", model_name, job.id)
    return RetrainCheck(model_name, job.id, "queued: the training data changed")


def _recipe(session: Session, run: TrainingRun | None, kind: str) -> dict[str, Any]:
    """The parameters of the `kind` job behind `run` (a run outside such a job: its training
    arguments as resolved, which every app's training job takes as `arguments`), promotion if
    not worse."""
    previous = session.get(Job, run.job_id) if run and run.job_id else None
    if previous is not None and previous.kind == kind:
        params = dict(previous.params)
    elif run is not None:  # the run records its base model beside the arguments
        arguments = {k: v for k, v in run.params.items() if k != "base_reference"}
        params = {"arguments": arguments}
    else:
        params = {}
    return {**params, "promotion": IF_NOT_WORSE}


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h"
