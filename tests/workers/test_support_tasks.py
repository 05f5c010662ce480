"""`support.train` on a real Celery worker against PostgreSQL and Redis."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from core.jobs import submit_job
from core.ml.novelty import EXAMPLES_FILE
from core.settings import Settings
from core.storage.engine import get_session_factory, session_scope
from core.storage.models import JobStatus, ModelStage, ModelVersion, TrainingRun
from tests.apps.support.conftest import QUICK_TRAINING
from tests.conftest import _truncate
from tests.workers.conftest import wait_for_job

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def test_support_model_trains_on_the_worker_with_calibrated_thresholds(
    worker_settings: Settings, celery_worker
) -> None:
    from apps.support.demo import load_demo
    from workers.dispatch import create_dispatcher

    factory = get_session_factory(worker_settings.database_url)
    with session_scope(factory) as session:
        load_demo(session)
    dispatcher = create_dispatcher(worker_settings)
    try:
        job, _ = submit_job(factory, dispatcher, "support.train", {"arguments": QUICK_TRAINING})
        assert job.queue == "gpu"
        done = wait_for_job(factory, job.id, timeout_s=300)
        assert done.status is JobStatus.SUCCEEDED, done.error
        assert done.worker.split(":")[1] == str(celery_worker.pid)
        assert done.result["promoted"] is True
        with factory() as session:
            version = session.scalars(select(ModelVersion)).one()
            run = session.scalars(select(TrainingRun)).one()
        assert (version.name, version.stage) == ("support-intents", ModelStage.PRODUCTION)
        thresholds = version.config["thresholds"]
        assert 0 < thresholds["confidence"] <= 1 and thresholds["precision"] >= 0.95
        assert -1 < thresholds["unfamiliar"] < 1  # and the worker saved the examples' index
        assert (Path(version.artifact_path) / EXAMPLES_FILE).is_file()
        assert run.params["strategy"] == "fewshot" and len(run.data_fingerprint) == 64
    finally:
        dispatcher.close()
        _truncate(worker_settings.database_url)
