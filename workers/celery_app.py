"""The Celery app factory: broker, queues and the CUDA-safe reliability defaults."""

from __future__ import annotations

import importlib
import uuid

from celery import Celery, Task
from kombu import Queue

from core.jobs import QUEUES
from core.settings import Settings
from workers.execution import RetryLater, run_job
from workers.registry import JobTaskDefinition, task_definitions

# Modules whose import declares the suite's tasks (through `workers.registry.job_task`).
TASK_MODULES = ("workers.tasks",)


def import_task_modules(settings: Settings) -> None:
    for module in (*TASK_MODULES, *settings.worker_imports):
        importlib.import_module(module)


def create_celery_app(settings: Settings, *, periodic: bool = False) -> Celery:
    """A Celery app bound to `settings`, with every declared task registered on it, and with
    `periodic` the periodic work's tasks and beat schedule too (workers and beat run those;
    a process that only sends jobs needs none).

    Without a broker URL the app still exists (in-process jobs call its tasks directly);
    it never connects anywhere.
    """
    app = Celery("textsuite", broker=settings.broker_url or "memory://", set_as_current=False)
    app.conf.update(
        task_queues=[Queue(name) for name in QUEUES],
        task_default_queue="default",
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,  # status and results live in the jobs table
        # A job may be delivered twice; it is acknowledged only when it has finished, and a
        # worker that dies mid-job gives it back instead of losing it.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=settings.job_time_limit_s,
        # A minute to clean up before the hard limit (a tenth of the limit for short ones).
        task_soft_time_limit=max(settings.job_time_limit_s - 60, 0.9 * settings.job_time_limit_s),
        broker_transport_options={
            "visibility_timeout": settings.broker_visibility_timeout_s,
            # Look for messages a dead worker left unacknowledged every 10 s (kombu's default
            # scans every 100 s), so a job comes back soon after its visibility timeout.
            "unacked_restore_interval": min(10, settings.broker_visibility_timeout_s / 2),
            "unacked_restore_throttle": 1,
        },
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=True,
        task_send_sent_event=True,
    )
    import_task_modules(settings)
    for definition in task_definitions().values():
        _register(app, definition, settings)
    if periodic:
        from workers.periodic import register_periodic_tasks

        register_periodic_tasks(app, settings)
    return app


def _register(app: Celery, definition: JobTaskDefinition, settings: Settings) -> None:
    def run(task: Task, job_id: str) -> RetryLater | None:
        # The job's result goes to the database (`jobs show`), not to Celery, whose "task
        # succeeded" log line would print all of it (a training run's per-class tables).
        try:
            run_job(definition, settings, uuid.UUID(job_id), retries=task.request.retries or 0)
            return None
        except RetryLater as exc:
            if task.request.is_eager:
                # In-process: Celery's eager retry would re-run at once, ignoring the
                # countdown. Hand the retry back to the in-process dispatcher, which waits
                # out the backoff (returned, not raised: it is not a failure to log).
                return exc
            # A lease wait (not counted) may take as many rounds as the other run takes.
            limit = definition.max_retries if exc.counted else None
            raise task.retry(countdown=exc.countdown, max_retries=limit) from exc

    app.task(
        run,
        name=definition.name,
        bind=True,
        shared=False,  # bound to this app's settings; other apps register their own
        queue=definition.queue,
        max_retries=definition.max_retries,
        acks_late=True,
        reject_on_worker_lost=True,
    )
