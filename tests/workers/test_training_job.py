"""Fine-tuning as a job: parameters checked at submission, a run and a version recorded,
promotion when not worse — in-process on SQLite and on a real Celery worker with PostgreSQL."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from core.jobs import submit_job
from core.ml.device import choose_placement
from core.ml.loading import load_classifier
from core.settings import Settings
from core.storage.engine import get_session_factory
from core.storage.models import JobStatus, ModelStage, ModelVersion, TrainingRun
from tests.core.ml.conftest import keyword_intents, make_tiny_bert
from tests.workers.conftest import wait_for_job
from textsuite.service import create_service


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-base"))


def _write_csv(path: Path, per_class: int = 12) -> Path:
    data = keyword_intents(per_class)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["utterance", "intent"])
        writer.writerows(zip(data.texts, data.labels, strict=True))
    return path


def _params(data: Path, base: Path, **extra: object) -> dict[str, object]:
    return {
        "model_name": "tickets",
        "data_path": str(data),
        "text_field": "utterance",
        "label_field": "intent",
        "base_model": str(base),
        "arguments": {"strategy": "full", "epochs": 2, "max_length": 24, "batch_size": 8},
        **extra,
    }


def test_training_over_the_api_records_run_and_promoted_version(
    service_settings: Settings, api_key, tiny_base: Path, tmp_path: Path
) -> None:
    data = _write_csv(tmp_path / "tickets.csv")
    headers = {"X-API-Key": api_key("admin")}
    factory = get_session_factory(service_settings.database_url)
    with TestClient(create_service(service_settings)) as client:
        response = client.post(
            "/v1/jobs",
            json={"kind": "core.train_classifier", "params": _params(data, tiny_base)},
            headers=headers,
        )
        assert response.status_code == 202, response.text
        assert response.json()["queue"] == "gpu"
        job = wait_for_job(factory, response.json()["id"], timeout_s=120)
    assert job.status is JobStatus.SUCCEEDED, job.error
    assert job.result["version"] == 1 and job.result["promoted"] is True
    with factory() as session:
        run = session.scalars(select(TrainingRun)).one()
        version = session.scalars(select(ModelVersion)).one()
    assert run.job_id == job.id and run.status is JobStatus.SUCCEEDED and run.progress == 1.0
    assert len(run.data_fingerprint) == 64 and run.params["strategy"] == "full"
    assert {"accuracy", "macro_f1", "ece"} <= set(run.metrics)
    assert (version.name, version.stage, version.training_run_id) == (
        "tickets",
        ModelStage.PRODUCTION,
        run.id,
    )
    assert Path(version.artifact_path).is_relative_to(service_settings.artifacts_dir)
    classifier = load_classifier(Path(version.artifact_path), choose_placement("cpu"))
    assert sorted(classifier.labels) == sorted(set(keyword_intents(1).labels))
    assert classifier.predict_proba(["my card has not arrived"]).shape == (1, 4)


def test_promotion_never_leaves_a_candidate(
    service_settings: Settings, tiny_base: Path, tmp_path: Path
) -> None:
    from workers.dispatch import create_dispatcher

    factory = get_session_factory(service_settings.database_url)
    dispatcher = create_dispatcher(service_settings)
    data = _write_csv(tmp_path / "t.csv")
    job, _ = submit_job(
        factory,
        dispatcher,
        "core.train_classifier",
        _params(data, tiny_base, promotion="never"),
    )
    done = wait_for_job(factory, job.id, timeout_s=120)
    dispatcher.close()
    assert done.status is JobStatus.SUCCEEDED, done.error
    assert done.result["promoted"] is False
    with factory() as session:
        assert session.scalars(select(ModelVersion)).one().stage is ModelStage.CANDIDATE


def test_a_run_delivered_again_after_recording_its_version_does_not_train_again(
    service_settings: Settings, tiny_base: Path, tmp_path: Path
) -> None:
    """The worker died between recording the version and finishing the job: the job comes
    back, finds its run's version, and only finishes the promotion. Training again would
    rewrite the files that version serves from."""
    from core.ml.runs import PromotionPolicy, run_classifier_training
    from core.ml.training import LabelledTexts, TrainingArguments
    from core.storage.models import Job

    factory = get_session_factory(service_settings.database_url)
    with factory() as session:  # the job row a delivery would hold
        job = Job(kind="core.train_classifier", queue="gpu", status=JobStatus.RUNNING, params={})
        session.add(job)
        session.commit()
    data = LabelledTexts.from_csv(_write_csv(tmp_path / "t.csv"), "utterance", "intent")
    arguments = TrainingArguments.from_dict(_params(data, tiny_base)["arguments"])

    def deliver(promotion: PromotionPolicy) -> tuple[int, bool, list[float]]:
        messages: list[float] = []
        outcome = run_classifier_training(
            service_settings,
            factory,
            model_name="tickets",
            base_reference=str(tiny_base),
            data=data,
            arguments=arguments,
            job_id=job.id,
            progress=lambda fraction, message=None: messages.append(fraction),
            promotion=promotion,
        )
        return outcome.version, outcome.promoted, messages

    first = deliver(PromotionPolicy.NEVER)  # stands for "recorded, then the worker died"
    with factory() as session:
        artifact = Path(session.scalars(select(ModelVersion)).one().artifact_path)
    weights = {path: path.stat().st_mtime_ns for path in artifact.rglob("*") if path.is_file()}
    again = deliver(PromotionPolicy.IF_NOT_WORSE)

    assert first[:2] == (1, False) and len(first[2]) > 3  # it trained, step by step
    assert again == (1, True, [])  # the same version, promoted now, no step trained
    assert {path: path.stat().st_mtime_ns for path in weights} == weights
    with factory() as session:
        assert session.scalars(select(ModelVersion)).one().stage is ModelStage.PRODUCTION
        assert len(session.scalars(select(TrainingRun)).all()) == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_name": "Tickets!"}, "model_name: String should match pattern"),
        ({"data_path": "/data/tickets.xlsx"}, "expected a .csv or .jsonl file"),
        ({"arguments": {"epochz": 3}}, "unknown argument 'epochz'; known arguments: "),
        ({"arguments": {"epochs": "many"}}, "epochs: Input should be a valid number"),
        ({"arguments": {"epochs": -1}}, "epochs: Input should be greater than 0"),
        ({"arguments": {"seed": -3, "max_steps": 0}}, "seed: Input should be greater than or"),
        ({"arguments": {"lora": {"r": 0}}}, "lora.r: Input should be greater than or equal to 1"),
        ({"arguments": {"lora": {"rank": 8}}}, "unknown argument 'lora.rank'"),
        ({"arguments": {"strategy": "magic"}}, "strategy: Input should be 'auto', 'full'"),
        ({"promotion": "always"}, "promotion: Input should be"),
        ({"surprise": 1}, "surprise: Extra inputs are not permitted"),
    ],
)
def test_bad_parameters_are_422_and_store_nothing(
    client, api_key, service_settings: Settings, tmp_path: Path, change, message: str
) -> None:
    params = {**_params(tmp_path / "x.csv", tmp_path), **change}
    response = client.post(
        "/v1/jobs",
        json={"kind": "core.train_classifier", "params": params},
        headers={"X-API-Key": api_key("admin")},
    )
    assert response.status_code == 422
    assert message in response.json()["detail"]
    with get_session_factory(service_settings.database_url)() as session:
        assert session.scalars(select(TrainingRun)).all() == []


def test_missing_data_file_fails_the_job_with_the_reason(
    service_settings: Settings, tiny_base: Path, tmp_path: Path
) -> None:
    from workers.dispatch import create_dispatcher

    factory = get_session_factory(service_settings.database_url)
    dispatcher = create_dispatcher(service_settings)
    job, _ = submit_job(
        factory, dispatcher, "core.train_classifier", _params(tmp_path / "gone.csv", tiny_base)
    )
    done = wait_for_job(factory, job.id, timeout_s=60)
    dispatcher.close()
    assert done.status is JobStatus.FAILED
    assert "gone.csv does not exist on this worker" in done.error


@pytest.mark.postgres
@pytest.mark.redis
def test_training_runs_on_the_celery_worker(
    worker_settings: Settings, celery_worker, tiny_base: Path, tmp_path: Path
) -> None:
    from tests.conftest import _truncate
    from workers.dispatch import create_dispatcher

    factory = get_session_factory(worker_settings.database_url)
    dispatcher = create_dispatcher(worker_settings)
    data = _write_csv(tmp_path / "tickets.csv")
    try:
        job, _ = submit_job(factory, dispatcher, "core.train_classifier", _params(data, tiny_base))
        done = wait_for_job(factory, job.id, timeout_s=180)
        assert done.status is JobStatus.SUCCEEDED, done.error
        assert done.worker.split(":")[1] == str(celery_worker.pid)
        with factory() as session:
            version = session.scalars(select(ModelVersion)).one()
        assert version.stage is ModelStage.PRODUCTION
        assert Path(version.artifact_path).is_relative_to(worker_settings.artifacts_dir)
    finally:
        dispatcher.close()
        _truncate(worker_settings.database_url)


def test_an_artifacts_folder_that_cannot_be_written_fails_before_training(
    service_settings: Settings, tiny_base: Path, tmp_path: Path
) -> None:
    from workers.dispatch import create_dispatcher

    unwritable = service_settings.model_copy(update={"artifacts_dir": Path("/proc/textsuite")})
    factory = get_session_factory(unwritable.database_url)
    dispatcher = create_dispatcher(unwritable)
    data = _write_csv(tmp_path / "tickets.csv")
    job, _ = submit_job(factory, dispatcher, "core.train_classifier", _params(data, tiny_base))
    done = wait_for_job(factory, job.id, timeout_s=60)
    dispatcher.close()
    assert done.status is JobStatus.FAILED
    assert "cannot write model versions to /proc/textsuite (TEXTSUITE_ARTIFACTS_DIR)" in done.error
    assert done.progress_message is None or "fitting" not in done.progress_message


def test_a_training_job_cancelled_while_it_runs_stops_and_records_no_version(
    service_settings: Settings, api_key, tiny_base: Path, tmp_path: Path
) -> None:
    data = _write_csv(tmp_path / "tickets.csv")
    params = _params(data, tiny_base)
    # minutes of training, unless stopped
    params["arguments"] = {**params["arguments"], "epochs": 400, "early_stopping_patience": 0}
    headers = {"X-API-Key": api_key("admin")}
    factory = get_session_factory(service_settings.database_url)
    with TestClient(create_service(service_settings)) as client:
        job_id = client.post(
            "/v1/jobs", json={"kind": "core.train_classifier", "params": params}, headers=headers
        ).json()["id"]
        training = wait_for_job(
            factory, job_id, timeout_s=120, until=lambda job: "step" in (job.progress_message or "")
        )
        assert not training.status.finished
        asked = client.post(f"/v1/jobs/{job_id}/cancel", headers=headers)
        assert asked.status_code == 202, asked.text
        assert asked.json()["status"] == "running" and asked.json()["cancel_requested_at"]
        job = wait_for_job(factory, job_id, timeout_s=60)
        again = client.post(f"/v1/jobs/{job_id}/cancel", headers=headers)
    assert job.status is JobStatus.CANCELLED and job.progress < 0.5
    assert again.status_code == 409 and "already finished: cancelled" in again.json()["detail"]
    with factory() as session:
        run = session.scalars(select(TrainingRun)).one()
        assert run.status is JobStatus.CANCELLED
        assert session.scalars(select(ModelVersion)).all() == []
