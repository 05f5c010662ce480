"""Running one delivery of a job: claim it, keep its heartbeat, record the outcome."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from core import jobs
from core.metrics import JOB_DURATION
from core.privacy import mask_values
from core.settings import Settings
from core.storage import get_session_factory
from workers.registry import JobTaskDefinition

log = logging.getLogger(__name__)


class RetryLater(Exception):
    """Deliver the job again after `countdown` seconds. `counted`: this uses one of the kind's
    retries (a transient failure); a wait for another worker's lease does not."""

    def __init__(self, countdown: float, reason: str, *, counted: bool = True) -> None:
        super().__init__(reason)
        self.countdown = countdown
        self.counted = counted


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


class _Heartbeat:
    """Refreshes the job's heartbeat while the body runs, so its lease does not expire."""

    def __init__(self, factory: sessionmaker[Session], job_id: uuid.UUID, every_s: float) -> None:
        self._factory, self._job_id, self._every_s = factory, job_id, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{job_id}", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self._every_s):
            try:
                jobs.heartbeat(self._factory, self._job_id)
            except Exception:  # a database blip must not kill the job; the next beat retries
                log.warning("heartbeat failed", extra={"job_id": str(self._job_id)}, exc_info=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_job(
    definition: JobTaskDefinition,
    settings: Settings,
    job_id: uuid.UUID,
    *,
    retries: int,
) -> dict[str, Any] | None:
    """Run one delivery of `job_id`. Safe to call twice: a claimed or finished job is skipped.

    Raises `RetryLater` when the body asked for a retry and retries are left; records
    `failed` with the reason for any other error (and re-raises it for the broker's records).
    """
    factory = get_session_factory(settings.database_url)
    lease_s = settings.job_lease_s
    job = jobs.claim_job(factory, job_id, worker_name(), lease_s)
    if job is None:
        if jobs.is_running(factory, job_id):
            # Alive elsewhere, or its worker died so recently that its lease has not run out
            # (a killed pool process's message comes back at once). Dropping this delivery
            # would leave the job `running` forever if that worker is dead: look again later.
            raise RetryLater(lease_s, "running elsewhere; checking after its lease", counted=False)
        log.info(
            "job already finished; skipping this delivery",
            extra={"job_id": str(job_id), "kind": definition.name},
        )
        return None

    def progress(fraction: float, message: str | None = None) -> None:
        jobs.report_progress(factory, job_id, fraction, message)

    # A reply for a customer is kept for the record once done, its personal data masked.
    masked = mask_values(job.params) if definition.personal_params else None

    started = time.perf_counter()
    outcome = "failed"
    try:
        context = jobs.JobContext(
            job_id=job_id,
            kind=job.kind,
            params=dict(job.params),
            settings=settings,
            session_factory=factory,
            attempt=job.attempts,
            progress=progress,
        )
        with _Heartbeat(factory, job_id, every_s=max(lease_s / 4, 0.5)):
            result = definition.body(context)
        jobs.finish_job(factory, job_id, result, params=masked)
        outcome = "succeeded"
        return dict(result or {})
    except jobs.JobCancelled:
        jobs.mark_cancelled(factory, job_id)
        outcome = "cancelled"
        log.info("job cancelled", extra={"job_id": str(job_id), "kind": definition.name})
        return None
    except jobs.TransientJobError as exc:
        reason = f"{type(exc).__name__}: {exc}"
        if retries < definition.max_retries:
            outcome = "retrying"
            jobs.mark_retrying(factory, job_id, reason)
            raise RetryLater(definition.backoff(retries), reason) from exc
        jobs.fail_job(
            factory, job_id, f"{reason} (gave up after {retries + 1} attempts)", params=masked
        )
        raise
    except Exception as exc:
        jobs.fail_job(factory, job_id, f"{type(exc).__name__}: {exc}", params=masked)
        log.exception("job failed", extra={"job_id": str(job_id), "kind": definition.name})
        raise
    finally:
        JOB_DURATION.labels(definition.name, outcome).observe(time.perf_counter() - started)
