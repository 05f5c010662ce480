"""Dispatchers: hand stored jobs to Celery workers, or run them on threads in this process."""

from __future__ import annotations

import logging
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for_futures

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

    GPU work runs on a single thread, as one GPU worker would, and short model work (the
    `inference` queue) on one of its own, so it never waits behind a training job; the
    default queue gets `threads` threads. A retry waits out its backoff on a timer, not on a
    job thread, so a target that keeps failing does not hold up other jobs. `close` waits for
    the job bodies running now (and, given `drain_s`, the queued ones for that long); queued
    jobs and pending retries left stay queued or retrying in the database, and the next
    process sends them again (`core.jobs.redispatch_stalled`).
    """

    def __init__(self, celery: Celery, threads: int) -> None:
        self.celery = celery
        self._executors = {
            "gpu": ThreadPoolExecutor(1, thread_name_prefix="job-gpu"),
            "inference": ThreadPoolExecutor(1, thread_name_prefix="job-inference"),
            "default": ThreadPoolExecutor(threads, thread_name_prefix="job-default"),
        }
        self._timers: set[threading.Timer] = set()
        self._queued: set[Future[None]] = set()
        self._lock = threading.Lock()
        self._closed = False

    def spec_for(self, kind: str) -> JobKindSpec:
        return get_definition(kind).spec

    def dispatch(self, job_id: uuid.UUID, kind: str, queue: str) -> None:
        self._submit(kind, str(job_id), queue, retries=0)

    def _submit(self, kind: str, job_id: str, queue: str, retries: int) -> None:
        with self._lock:
            if self._closed:
                return  # shutting down: the job stays in the database for the next process
            future = self._executors[queue].submit(self._run, kind, job_id, queue, retries)
            self._queued.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: Future[None]) -> None:
        with self._lock:
            self._queued.discard(future)

    def _run(self, kind: str, job_id: str, queue: str, retries: int) -> None:
        result = self.celery.tasks[kind].apply(args=[job_id], retries=retries, throw=False)
        if not isinstance(result.result, RetryLater):
            return
        # The job is recorded as retrying; send it again after its backoff, as a broker would.
        retry = result.result
        timer = threading.Timer(
            retry.countdown, self._retry, args=(kind, job_id, queue, retries + retry.counted)
        )
        timer.daemon = True
        with self._lock:
            if self._closed:
                return
            self._timers.add(timer)
        timer.start()

    def _retry(self, kind: str, job_id: str, queue: str, retries: int) -> None:
        with self._lock:
            self._timers.discard(threading.current_thread())  # type: ignore[arg-type]
        self._submit(kind, job_id, queue, retries)

    def close(self, wait: bool = True, *, drain_s: float = 0.0) -> int:
        """Stop; returns how many queued jobs and retries were left to the next process.
        `drain_s`: first let queued jobs run for up to this long (a command that raised
        alerts lets their notifications go out before it exits)."""
        if drain_s > 0:
            with self._lock:
                queued = set(self._queued)
            wait_for_futures(queued, timeout=drain_s)
        with self._lock:
            self._closed = True
            left = len(self._timers) + sum(not future.running() for future in self._queued)
            timers, self._timers = self._timers, set()
        for timer in timers:
            timer.cancel()
        for executor in self._executors.values():
            executor.shutdown(wait=wait, cancel_futures=True)
        return left


def create_dispatcher(settings: Settings) -> JobDispatcher:
    """The dispatcher the settings ask for: Celery with a broker, in-process without."""
    celery = create_celery_app(settings)
    if settings.jobs_inprocess:
        return InProcessDispatcher(celery, settings.inprocess_job_threads)
    return CeleryDispatcher(celery)
