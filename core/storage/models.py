"""Tables the core owns: API keys, jobs, training runs and model versions."""

from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum
from typing import Any

from sqlalchemy import Float, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.storage.base import Base, created_at, str_enum, utcnow, uuid_pk


class Scope(StrEnum):
    SUPPORT = "support"
    SENTIMENT = "sentiment"
    RECOMMEND = "recommend"
    ADMIN = "admin"


class ApiKey(Base):
    """An API key, stored as a SHA-256 hash; the clear key is shown once at creation."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = uuid_pk()
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]]
    created_at: Mapped[dt.datetime] = created_at()
    last_used_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]
    # Requests per second this key may make to one API process (None: the configured default).
    rate_limit_per_s: Mapped[float | None] = mapped_column(Float)

    def grants(self, scope: Scope) -> bool:
        return self.revoked_at is None and (scope in self.scopes or Scope.ADMIN in self.scopes)


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)

    @classmethod
    def unfinished(cls) -> tuple[JobStatus, ...]:
        """The statuses of a job still to finish (queued, running, or waiting to retry)."""
        return tuple(status for status in cls if not status.finished)


class Job(Base):
    """One unit of background work; its status and result live here, not in Celery."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_created", "status", "created_at"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    kind: Mapped[str] = mapped_column(String(100), index=True)
    queue: Mapped[str] = mapped_column(String(32))
    status: Mapped[JobStatus] = mapped_column(str_enum(JobStatus, "job_status"))
    progress: Mapped[float] = mapped_column(default=0.0)
    progress_message: Mapped[str | None] = mapped_column(String(300))
    params: Mapped[dict[str, Any]]
    result: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    attempts: Mapped[int] = mapped_column(default=0)
    worker: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = created_at()
    started_at: Mapped[dt.datetime | None]
    heartbeat_at: Mapped[dt.datetime | None]
    # Asked to stop while running: the body stops at its next progress report.
    cancel_requested_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class TrainingRun(Base):
    """A fine-tuning run: what went in (parameters, data fingerprint) and what came out."""

    __tablename__ = "training_runs"

    id: Mapped[uuid.UUID] = uuid_pk()
    job_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), index=True
    )
    model_name: Mapped[str] = mapped_column(String(100), index=True)
    base_model: Mapped[str] = mapped_column(String(500))
    params: Mapped[dict[str, Any]]
    data_fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[JobStatus] = mapped_column(str_enum(JobStatus, "training_run_status"))
    progress: Mapped[float] = mapped_column(default=0.0)
    metrics: Mapped[dict[str, Any] | None]
    artifact_path: Mapped[str | None] = mapped_column(String(1000))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = created_at()
    finished_at: Mapped[dt.datetime | None]


class ModelStage(StrEnum):
    CANDIDATE = "candidate"
    PRODUCTION = "production"
    ARCHIVED = "archived"


class ModelVersion(Base):
    """A trained model that can be compared, promoted to production and rolled back."""

    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("name", "version"),
        # At most one production version per model name, enforced by the database.
        Index(
            "uq_model_versions_one_production",
            "name",
            unique=True,
            postgresql_where="stage = 'production'",
            sqlite_where="stage = 'production'",
        ),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    name: Mapped[str] = mapped_column(String(100))
    version: Mapped[int]
    task: Mapped[str] = mapped_column(String(32))
    base_model: Mapped[str] = mapped_column(String(500))
    artifact_path: Mapped[str] = mapped_column(String(1000))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    stage: Mapped[ModelStage] = mapped_column(str_enum(ModelStage, "model_stage"))
    training_run_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("training_runs.id", ondelete="SET NULL")
    )
    created_at: Mapped[dt.datetime] = created_at()
    promoted_at: Mapped[dt.datetime | None]
