"""The house task decorator: every background task is declared through `job_task`.

Declaring does no work: it records a `JobTaskDefinition`. `create_celery_app` turns each
definition into a Celery task with an explicit name, queue and retry policy, all running
through `workers.execution.run_job` (job status, heartbeat, metrics).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from core.jobs import QUEUES, JobContext, JobKindSpec, UnknownJobKind

TaskBody = Callable[[JobContext], Mapping[str, Any] | None]


@dataclass(frozen=True)
class JobTaskDefinition:
    name: str
    queue: str
    body: TaskBody
    max_retries: int
    retry_backoff_s: float
    params_model: type[BaseModel] | None = None
    # Its parameters carry personal data (a message for a customer): masked once it is done.
    personal_params: bool = False

    @property
    def spec(self) -> JobKindSpec:
        return JobKindSpec(self.queue, self.params_model)

    def backoff(self, retries: int) -> float:
        """Exponential backoff for the `retries`-th retry, capped at ten minutes."""
        return min(self.retry_backoff_s * 2**retries, 600.0)


_DEFINITIONS: dict[str, JobTaskDefinition] = {}


def job_task(
    name: str,
    *,
    queue: str = "default",
    max_retries: int = 3,
    retry_backoff_s: float = 5.0,
    params: type[BaseModel] | None = None,
    personal_params: bool = False,
) -> Callable[[TaskBody], TaskBody]:
    """Declare a task body `fn(ctx: JobContext) -> result dict` under an explicit name.

    `params`, a pydantic model, is checked when the job is submitted; the body receives the
    validated parameters as `ctx.params`. `personal_params`: they carry personal data (a
    reply for a customer), masked in the job's record once it succeeded or finally failed.

    `queue` is `gpu` for training and bulk inference, `inference` for short model work that
    must not wait behind training, `default` for everything else. A body
    raising `core.jobs.TransientJobError` is retried `max_retries` times with backoff; any other
    exception fails the job with its reason.
    """
    if queue not in QUEUES:
        raise ValueError(f"unknown queue {queue!r} for task {name!r}; expected one of {QUEUES}")

    def register(body: TaskBody) -> TaskBody:
        existing = _DEFINITIONS.get(name)
        if existing is not None and existing.body is not body:
            raise ValueError(f"task name {name!r} is declared twice")
        _DEFINITIONS[name] = JobTaskDefinition(
            name, queue, body, max_retries, retry_backoff_s, params, personal_params
        )
        return body

    return register


def task_definitions() -> dict[str, JobTaskDefinition]:
    return dict(_DEFINITIONS)


def get_definition(name: str) -> JobTaskDefinition:
    try:
        return _DEFINITIONS[name]
    except KeyError:
        raise UnknownJobKind(name, list(_DEFINITIONS)) from None
