"""Background jobs as database records: submit, claim, report progress, finish.

Celery (or the in-process runner) only carries a job's id; everything a user can see about a job
— status, progress, result, the reason it failed — lives in the `jobs` table. Delivery is
at-least-once, so claiming is an atomic conditional UPDATE and a finished job is never re-run.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from core.metrics import JOBS_SUBMITTED
from core.settings import Settings
from core.storage.base import utcnow
from core.storage.engine import session_scope
from core.storage.models import Job, JobStatus
from core.validation import problems

log = logging.getLogger(__name__)

# How a job that never reached the broker fails (`submit_job`).
NOT_QUEUED = "could not enqueue job"
# The reason a cancelled job shows.
CANCELLED = "cancelled on request"

# default: deliveries, notifications and periodic ticks (no model); gpu: training and bulk
# model work, one job at a time per accelerator; inference: short model work that must not
# wait behind a training job (embedding new catalogue items).
QUEUES = ("default", "gpu", "inference")
# The queues whose jobs run models: their workers never fork after loading one (CUDA).
MODEL_QUEUES = frozenset({"gpu", "inference"})


class UnknownJobKind(LookupError):
    def __init__(self, kind: str, known: list[str]) -> None:
        super().__init__(f"unknown job kind {kind!r}; known kinds: {', '.join(sorted(known))}")


class IdempotencyConflict(ValueError):
    """The idempotency key was already used for a different job."""


class DispatchError(RuntimeError):
    """The job was stored but could not be handed to the broker."""


class InvalidJobParams(ValueError):
    """A job's parameters do not match what its kind expects."""


class JobCancelled(Exception):
    """Raised from a running job's progress report once it was asked to stop."""


class JobFinished(ValueError):
    """The job already finished: there is nothing left to cancel."""


class NoParams(BaseModel):
    """The parameters of a kind that takes none: any given is refused, not ignored."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class JobKindSpec:
    """What a job kind needs: its queue, and optionally a model its parameters must fit."""

    queue: str
    params_model: type[BaseModel] | None = None

    def validate(self, kind: str, params: Mapping[str, Any]) -> dict[str, Any]:
        if self.params_model is None:
            return dict(params)
        try:
            return self.params_model.model_validate(dict(params)).model_dump(mode="json")
        except ValidationError as exc:
            raise InvalidJobParams(
                f"invalid parameters for {kind}: {problems(exc, 'params')}"
            ) from None


class JobDispatcher(Protocol):
    """Hands stored jobs to whatever runs them (Celery workers, or threads in this process)."""

    def spec_for(self, kind: str) -> JobKindSpec:
        """The kind's queue and parameter model; raises `UnknownJobKind` listing valid kinds."""
        ...

    def dispatch(self, job_id: uuid.UUID, kind: str, queue: str) -> None: ...


def submit_job(
    factory: sessionmaker[Session],
    dispatcher: JobDispatcher,
    kind: str,
    params: Mapping[str, Any] | None = None,
    *,
    idempotency_key: str | None = None,
    queue: str | None = None,
    dispatch_later_if_down: bool = False,
) -> tuple[Job, bool]:
    """Store a job and dispatch it. Returns `(job, created)`.

    With an `idempotency_key` that was used before for the same kind and parameters, the
    existing job is returned and nothing is dispatched again. Parameters are checked against
    the kind's model first (`InvalidJobParams`), so a bad request never becomes a failed job.

    When the broker cannot take the job, it is failed and `DispatchError` raised, so the
    caller can say "try again later". With `dispatch_later_if_down` it stays queued instead
    and `redispatch_stalled` sends it once the broker is back: for the jobs that follow from
    data already committed (embedding new items, announcing an alert), which no retry of the
    request would ask for again.
    """
    spec = dispatcher.spec_for(kind)
    queue = queue or spec.queue
    if queue not in QUEUES:
        raise ValueError(f"unknown queue {queue!r}; expected one of {', '.join(QUEUES)}")
    params = spec.validate(kind, params or {})
    job = Job(
        kind=kind,
        queue=queue,
        status=JobStatus.QUEUED,
        params=params,
        idempotency_key=idempotency_key,
    )
    with factory() as session:
        session.add(job)
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            if idempotency_key is None:
                raise
            existing = session.scalars(
                select(Job).where(Job.idempotency_key == idempotency_key)
            ).one()
            if existing.kind != kind or existing.params != params:
                raise IdempotencyConflict(
                    f"idempotency key {idempotency_key!r} was used for job {existing.id} "
                    f"({existing.kind}) with other parameters"
                ) from None
            # The broker was away when this job was first asked for: the retry that the 503
            # asked for sends it now (the key still means one job). Compare and set, so that
            # of two such retries only one sends it.
            requeued = session.execute(
                update(Job)
                .where(
                    Job.id == existing.id,
                    Job.status == JobStatus.FAILED,
                    Job.error.startswith(NOT_QUEUED, autoescape=True),
                )
                .values(status=JobStatus.QUEUED, error=None, finished_at=None)
            ).rowcount  # type: ignore[attr-defined]
            session.commit()
            if not requeued:
                return existing, False
            session.refresh(existing)
            job = existing
    try:
        dispatcher.dispatch(job.id, kind, queue)
    except Exception as exc:
        reason = f"{NOT_QUEUED}: {type(exc).__name__}: {exc}"
        if dispatch_later_if_down:
            log.warning("%s; job %s stays queued and is sent again later", reason, job.id)
            return job, True
        fail_job(factory, job.id, reason)
        raise DispatchError(reason) from exc
    JOBS_SUBMITTED.labels(kind).inc()
    return job, True


def get_job(session: Session, job_id: uuid.UUID) -> Job | None:
    return session.get(Job, job_id)


def list_jobs(
    session: Session,
    *,
    status: JobStatus | None = None,
    kind_prefixes: list[str] | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[Job]:
    query = select(Job).order_by(Job.created_at.desc(), Job.id).limit(limit).offset(offset)
    if status is not None:
        query = query.where(Job.status == status)
    if kind_prefixes is not None:
        query = query.where(or_(*(Job.kind.startswith(f"{p}.") for p in kind_prefixes)))
    return list(session.scalars(query))


def claim_job(
    factory: sessionmaker[Session], job_id: uuid.UUID, worker: str, lease_s: float
) -> Job | None:
    """Atomically take a job for running; `None` when it is finished or alive elsewhere.

    A job counts as alive elsewhere while its heartbeat is younger than `lease_s`; after
    that, a redelivered message may take it over (its worker died).
    """
    now = utcnow()
    stale = now - dt.timedelta(seconds=lease_s)
    dead = (Job.status == JobStatus.RUNNING) & (Job.heartbeat_at < stale)
    with factory() as session:
        # A dead worker's job that was asked to stop is not run again: it ends here.
        session.execute(
            update(Job)
            .where(Job.id == job_id, dead, Job.cancel_requested_at.is_not(None))
            .values(status=JobStatus.CANCELLED, error=CANCELLED, finished_at=now, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        claimed = session.execute(
            update(Job)
            .where(
                Job.id == job_id,
                or_(Job.status.in_([JobStatus.QUEUED, JobStatus.RETRYING]), dead),
            )
            .values(
                status=JobStatus.RUNNING,
                attempts=Job.attempts + 1,
                worker=worker,
                started_at=now,
                heartbeat_at=now,
                error=None,
            )
            .execution_options(synchronize_session=False)
        ).rowcount
        session.commit()
        return session.get(Job, job_id) if claimed == 1 else None


def redispatch_stalled(
    factory: sessionmaker[Session],
    dispatcher: JobDispatcher,
    *,
    waiting_s: float,
    lease_s: float,
    limit: int = 500,
) -> list[uuid.UUID]:
    """Send again the jobs whose message may have been lost: untouched for `waiting_s`, and
    queued, retrying, or running with no heartbeat for longer than `lease_s` (its worker died).

    A broker that restarted without persisting its queues, or an API process that died with
    in-process jobs, leaves such jobs behind; nothing else would ever run them. Sending a job
    twice is safe: claiming is atomic, so whichever message comes second finds the job taken.
    """
    now = utcnow()
    untouched = now - dt.timedelta(seconds=waiting_s)
    dead = now - dt.timedelta(seconds=lease_s)
    with factory() as session:
        stalled = session.execute(
            select(Job.id, Job.kind, Job.queue)
            .where(
                Job.updated_at < untouched,  # heartbeats and progress touch it too
                or_(
                    Job.status.in_([JobStatus.QUEUED, JobStatus.RETRYING]),
                    (Job.status == JobStatus.RUNNING) & (Job.heartbeat_at < dead),
                ),
            )
            .order_by(Job.created_at)
            .limit(limit)
        ).all()
    sent: list[uuid.UUID] = []
    for job_id, kind, queue in stalled:
        _update(factory, job_id)  # touched: not sent again before another `waiting_s`
        dispatcher.dispatch(job_id, kind, queue)
        sent.append(job_id)
    return sent


def redispatch_every_s(settings: Settings) -> float:
    """How often a process looks for jobs whose message was lost."""
    return min(60.0, settings.job_redispatch_after_s / 2)


def redispatch_lost_jobs(
    settings: Settings, factory: sessionmaker[Session], dispatcher: JobDispatcher
) -> list[uuid.UUID]:
    """The periodic form of `redispatch_stalled`, at the settings' waits, with a log line."""
    sent = redispatch_stalled(
        factory,
        dispatcher,
        waiting_s=settings.job_redispatch_after_s,
        lease_s=settings.job_lease_s,
    )
    if sent:
        log.warning(
            "sent %d stalled jobs again (their message was lost?): %s",
            len(sent), ", ".join(map(str, sent)),
        )  # fmt: skip
    return sent


def is_running(factory: sessionmaker[Session], job_id: uuid.UUID) -> bool:
    with factory() as session:
        return session.scalar(select(Job.status).where(Job.id == job_id)) is JobStatus.RUNNING


def _update(factory: sessionmaker[Session], job_id: uuid.UUID, **values: Any) -> None:
    with factory() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(updated_at=utcnow(), **values)
            .execution_options(synchronize_session=False)
        )
        session.commit()


def heartbeat(factory: sessionmaker[Session], job_id: uuid.UUID) -> None:
    _update(factory, job_id, heartbeat_at=utcnow())


def report_progress(
    factory: sessionmaker[Session], job_id: uuid.UUID, fraction: float, message: str | None = None
) -> None:
    """Record progress; raises `JobCancelled` when the job was asked to stop."""
    fraction = min(max(float(fraction), 0.0), 1.0)
    now = utcnow()
    with factory() as session:
        recorded = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.cancel_requested_at.is_(None))
            .values(updated_at=now, heartbeat_at=now, progress=fraction, progress_message=message)
            .execution_options(synchronize_session=False)
        ).rowcount  # type: ignore[attr-defined]
        session.commit()
    if not recorded:
        raise JobCancelled(f"job {job_id} was cancelled")


def cancel_job(factory: sessionmaker[Session], job_id: uuid.UUID) -> Job | None:
    """Cancel a job: one that waits ends `cancelled` now; one that runs is asked to stop and
    ends `cancelled` at its next progress report. `None` for an unknown job; `JobFinished`
    when it already finished (a job that stops reporting progress may also finish first)."""
    now = utcnow()
    with factory() as session:
        waiting = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status.in_([JobStatus.QUEUED, JobStatus.RETRYING]))
            .values(
                status=JobStatus.CANCELLED,
                error=CANCELLED,
                finished_at=now,
                cancel_requested_at=now,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        ).rowcount  # type: ignore[attr-defined]
        if not waiting:
            session.execute(
                update(Job)
                .where(
                    Job.id == job_id,
                    Job.status == JobStatus.RUNNING,
                    Job.cancel_requested_at.is_(None),
                )
                .values(cancel_requested_at=now, updated_at=now)
                .execution_options(synchronize_session=False)
            )
        session.commit()
        job = session.get(Job, job_id)
    if job is not None and job.status.finished and not waiting:
        raise JobFinished(f"job {job_id} already finished: {job.status.value}")
    return job


def finish_job(
    factory: sessionmaker[Session],
    job_id: uuid.UUID,
    result: Mapping[str, Any] | None,
    *,
    params: Mapping[str, Any] | None = None,
) -> None:
    """Record success; `params`, when given, replace the job's (masked, once used)."""
    _update(
        factory,
        job_id,
        status=JobStatus.SUCCEEDED,
        result=dict(result or {}),
        progress=1.0,
        finished_at=utcnow(),
        error=None,
        **({"params": dict(params)} if params is not None else {}),
    )


def fail_job(
    factory: sessionmaker[Session],
    job_id: uuid.UUID,
    reason: str,
    *,
    params: Mapping[str, Any] | None = None,
) -> None:
    _update(
        factory,
        job_id,
        status=JobStatus.FAILED,
        error=reason,
        finished_at=utcnow(),
        **({"params": dict(params)} if params is not None else {}),
    )


def mark_cancelled(factory: sessionmaker[Session], job_id: uuid.UUID) -> None:
    _update(factory, job_id, status=JobStatus.CANCELLED, error=CANCELLED, finished_at=utcnow())


def mark_retrying(factory: sessionmaker[Session], job_id: uuid.UUID, reason: str) -> None:
    _update(factory, job_id, status=JobStatus.RETRYING, error=reason)


@dataclass(frozen=True)
class JobContext:
    """What a task body gets: its job's id and parameters, storage, and a progress reporter."""

    job_id: uuid.UUID
    kind: str
    params: Mapping[str, Any]
    settings: Settings
    session_factory: sessionmaker[Session]
    attempt: int
    progress: Callable[[float, str | None], None]

    def session(self) -> AbstractContextManager[Session]:
        """A session that commits on success and rolls back on error."""
        return session_scope(self.session_factory)


class TransientJobError(RuntimeError):
    """Raise from a task body when trying again later may succeed (a remote API is down)."""
