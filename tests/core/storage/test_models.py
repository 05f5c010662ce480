from __future__ import annotations

import datetime as dt
import uuid

import pytest
from sqlalchemy import Uuid, bindparam, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.storage.models import Job, JobStatus, ModelStage, ModelVersion, TrainingRun


def _job(**fields: object) -> Job:
    values: dict[str, object] = {
        "kind": "core.worker_info",
        "queue": "default",
        "status": JobStatus.QUEUED,
        "params": {},
    }
    values.update(fields)
    return Job(**values)


def _version(name: str, version: int, stage: ModelStage) -> ModelVersion:
    return ModelVersion(
        name=name,
        version=version,
        task="classification",
        base_model="minilm",
        artifact_path=f"/artifacts/{name}/{version}",
        stage=stage,
    )


def test_job_round_trips_json_and_aware_timestamps(db_session: Session) -> None:
    job = _job(params={"texts": ["ü", "b"], "k": 3})
    db_session.add(job)
    db_session.flush()
    db_session.expire_all()
    loaded = db_session.get(Job, job.id)
    assert loaded is not None
    assert loaded.params == {"texts": ["ü", "b"], "k": 3}
    assert loaded.status is JobStatus.QUEUED
    assert loaded.created_at.tzinfo is not None
    assert abs(loaded.created_at - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)


def test_idempotency_key_is_unique(db_session: Session) -> None:
    db_session.add(_job(idempotency_key="k-1"))
    db_session.flush()
    db_session.add(_job(idempotency_key="k-1"))
    with pytest.raises(IntegrityError):
        db_session.flush()


def test_status_outside_the_enum_is_rejected_by_the_database(db_session: Session) -> None:
    insert = text(
        "INSERT INTO jobs (id, kind, queue, status, progress, params, attempts, created_at, "
        "updated_at) VALUES (:id, 'k', 'default', 'exploded', 0, '{}', 0, CURRENT_TIMESTAMP, "
        "CURRENT_TIMESTAMP)"
    ).bindparams(bindparam("id", type_=Uuid))
    with pytest.raises(IntegrityError):
        db_session.execute(insert, {"id": uuid.uuid4()})


def test_one_production_version_per_model(db_session: Session) -> None:
    db_session.add_all(
        [
            _version("intents", 1, ModelStage.PRODUCTION),
            _version("intents", 2, ModelStage.CANDIDATE),
            _version("sentiment", 1, ModelStage.PRODUCTION),
        ]
    )
    db_session.flush()
    db_session.add(_version("intents", 3, ModelStage.PRODUCTION))
    with pytest.raises(IntegrityError):
        db_session.flush()


def test_version_numbers_are_unique_per_model(db_session: Session) -> None:
    db_session.add(_version("intents", 1, ModelStage.CANDIDATE))
    db_session.flush()
    db_session.add(_version("intents", 1, ModelStage.CANDIDATE))
    with pytest.raises(IntegrityError):
        db_session.flush()


def test_training_run_links_job_and_version(db_session: Session) -> None:
    job = _job(kind="support.train", queue="gpu")
    db_session.add(job)
    db_session.flush()
    run = TrainingRun(
        job_id=job.id,
        model_name="intents",
        base_model="minilm",
        params={"epochs": 3},
        data_fingerprint="ab" * 32,
        status=JobStatus.SUCCEEDED,
        metrics={"accuracy": 0.9},
    )
    db_session.add(run)
    db_session.flush()
    version = _version("intents", 1, ModelStage.CANDIDATE)
    version.training_run_id = run.id
    db_session.add(version)
    db_session.flush()
    assert db_session.get(ModelVersion, version.id).training_run_id == run.id


def test_each_test_starts_empty(db_session: Session) -> None:
    """Runs after the others on the same backend: their rows were rolled back."""
    assert db_session.scalar(select(func.count()).select_from(Job)) == 0
    assert db_session.scalar(select(func.count()).select_from(ModelVersion)) == 0
