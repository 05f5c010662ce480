"""Dispatchers: hand stored jobs to Celery workers, or run them on threads in this process."""

from __future__ import annotations

import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from celery import Celery

from core.jobs import JobDispatcher, JobKindSpec
from core.settings import Settings
from workers.celery_app import create_celery_app
from workers.execution import RetryLater
from workers.registry import get_definition

log = logging.getLogger(__name__)


class CeleryDispatcher:
    """Sends a job's id to its queue on the Redis broker."""

    def __init__(self, celery: Celery) -> None:
        self.celery = celery

    def spec_for(self, kind: str) -> JobKindSpec:
        return get_definition(kind).spec

    def dispatch(self, job_id: uuid.UUID, kind: str, queue: str) -> None:
        self.celery.send_task(kind, args=[str(job_id)], queue=queue)

    def ping(self) -> None:
        with self.celery.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)

    def close(self) -> None:
        self.celery.close()


class InProcessDispatcher:
    """Runs the same Celery tasks on threads of this process (no broker configured).

    GPU work runs on a single thread, as one GPU worker would; the default queue gets
    `threads` threads. Retries wait out their backoff on the thread.
    """

    def __init__(self, celery: Celery, threads: int) -> None:
        self.celery = celery
        self._executors = {
            "gpu": ThreadPoolExecutor(1, thread_name_prefix="job-gpu"),
            "default": ThreadPoolExecutor(threads, thread_name_prefix="job-default"),
        }

    def spec_for(self, kind: str) -> JobKindSpec:
        return get_definition(kind).spec

    def dispatch(self, job_id: uuid.UUID, kind: str, queue: str) -> None:
        self._executors[queue].submit(self._run, kind, str(job_id))

    def _run(self, kind: str, job_id: str) -> None:
        task = self.celery.tasks[kind]
        retries = 0
        while True:
            result = task.apply(args=[job_id], retries=retries, throw=False)
            if not isinstance(result.result, RetryLater):
                return
            # The job is recorded as retrying; wait out its backoff, as a broker would.
            time.sleep(result.result.countdown)
            retries += result.result.counted

    def close(self, wait: bool = True) -> None:
        for executor in self._executors.values():
            executor.shutdown(wait=wait)


def create_dispatcher(settings: Settings) -> JobDispatcher:
    """The dispatcher the settings ask for: Celery with a broker, in-process without."""
    celery = create_celery_app(settings)
    if settings.jobs_inprocess:
        return InProcessDispatcher(celery, settings.inprocess_job_threads)
    return CeleryDispatcher(celery)
