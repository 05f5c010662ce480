"""`/v1/jobs`: job status for every app, and submission of registered job kinds (admin)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from core import jobs
from core.api.deps import (
    KEY_ERRORS,
    AdminKey,
    CurrentKey,
    DispatcherDep,
    Offset,
    SessionDep,
    SessionFactoryDep,
    unavailable,
)
from core.storage.models import ApiKey, Job, JobStatus, Scope

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=KEY_ERRORS)


class JobPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    kind: str
    queue: str
    status: JobStatus
    progress: float
    progress_message: str | None
    params: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    attempts: int
    idempotency_key: str | None
    worker: str | None = Field(description="host:pid:thread of the worker that took it last")
    created_at: dt.datetime
    started_at: dt.datetime | None
    heartbeat_at: dt.datetime | None = Field(
        description="refreshed while it runs; older than TEXTSUITE_JOB_LEASE_S on a running "
        "job: its worker died, and the job is sent again"
    )
    cancel_requested_at: dt.datetime | None
    finished_at: dt.datetime | None
    updated_at: dt.datetime


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(min_length=1, max_length=100, examples=["core.worker_info"])
    params: dict[str, Any] = Field(default_factory=dict)
    queue: str | None = Field(default=None, description="Override the kind's queue")
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)


def scope_for_kind(kind: str) -> Scope:
    """Jobs named `<app>.<task>` belong to that app's scope; anything else is admin's."""
    prefix = kind.split(".", 1)[0]
    try:
        return Scope(prefix)
    except ValueError:
        return Scope.ADMIN


def _visible(key: ApiKey, job: Job) -> bool:
    return key.grants(scope_for_kind(job.kind))


def _check_visible(key: ApiKey, job: Job | None, job_id: uuid.UUID) -> Job:
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job with id {job_id}")
    if not _visible(key, job):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"job {job_id} belongs to the {scope_for_kind(job.kind).value!r} scope",
        )
    return job


@router.get("/{job_id}", response_model=JobPublic, summary="A job's status, progress and result")
def read_job(job_id: uuid.UUID, session: SessionDep, key: CurrentKey) -> Job:
    return _check_visible(key, jobs.get_job(session, job_id), job_id)


@router.post(
    "/{job_id}/cancel",
    response_model=JobPublic,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Cancel a job",
    description="A queued or retrying job ends `cancelled` at once. A running one gets "
    "`cancel_requested_at` and ends `cancelled` at its next progress report (a training run "
    "within a few steps); it may still finish first. Any key that can see the job may cancel it.",
    responses={409: {"description": "the job already finished"}},
)
def cancel_job(
    job_id: uuid.UUID, session: SessionDep, factory: SessionFactoryDep, key: CurrentKey
) -> Job:
    _check_visible(key, jobs.get_job(session, job_id), job_id)
    try:
        return _check_visible(key, jobs.cancel_job(factory, job_id), job_id)
    except jobs.JobFinished as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None


@router.get("", response_model=list[JobPublic], summary="Recent jobs visible to this key")
def list_jobs(
    session: SessionDep,
    key: CurrentKey,
    job_status: Annotated[JobStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Offset = 0,
) -> list[Job]:
    prefixes = None if Scope.ADMIN in key.scopes else list(key.scopes)
    return jobs.list_jobs(
        session, status=job_status, kind_prefixes=prefixes, limit=limit, offset=offset
    )


@router.post(
    "",
    response_model=JobPublic,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Submit a job of a registered kind (admin)",
    responses={
        200: {"description": "the idempotency key was used before: the existing job"},
        409: {"description": "the idempotency key was used for other parameters"},
        503: {"description": "the broker is unreachable; the job is recorded as failed"},
    },
)
def submit_job(
    body: JobCreate,
    factory: SessionFactoryDep,
    dispatcher: DispatcherDep,
    _key: AdminKey,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Any:
    try:
        job, created = jobs.submit_job(
            factory,
            dispatcher,
            body.kind,
            body.params,
            idempotency_key=body.idempotency_key or idempotency_key,
            queue=body.queue,
        )
    except (jobs.UnknownJobKind, jobs.InvalidJobParams) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    except jobs.IdempotencyConflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    except jobs.DispatchError as exc:
        raise unavailable(str(exc), 5) from None
    if created:
        return JobPublic.model_validate(job)
    return JSONResponse(JobPublic.model_validate(job).model_dump(mode="json"), status_code=200)
