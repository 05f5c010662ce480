"""Celery workers killed with SIGKILL in the middle of a job, against real PostgreSQL and Redis:
the job is delivered again and its work is done once in effect — never lost, never twice.

Two deaths: the pool process running the job (Celery hands its message back at once), and the
whole worker (its message comes back from Redis after the visibility timeout, to the next
worker that starts). Each scenario runs `RUNS` times and reports lost and duplicated jobs.
A real fine-tuning job killed mid-training finishes on its second delivery with one run record
and one model version."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from sqlalchemy import select

from core.jobs import submit_job
from core.ml.device import choose_placement
from core.ml.loading import load_classifier
from core.settings import Settings
from core.storage.engine import get_session_factory
from core.storage.models import Job, ModelStage, ModelVersion, TrainingRun
from tests.core.ml.conftest import keyword_intents, make_tiny_bert
from tests.reliability.workers import (
    Workers,
    outcome,
    report,
    wait_until_ready,
    wait_until_running,
)
from tests.workers.conftest import wait_for_job
from workers.dispatch import CeleryDispatcher, create_dispatcher

RUNS = 3
TRAINING_RUNS = 1  # waits out a visibility timeout (about a minute)
JOB_SECONDS = 3.0  # long enough to be killed in the middle


def test_a_killed_pool_process_gives_its_job_back(
    kill_settings: Settings, workers: Workers, dispatcher: CeleryDispatcher, tmp_path: Path
) -> None:
    factory = get_session_factory(kill_settings.database_url)
    worker = workers.start()
    wait_until_ready(dispatcher, worker)
    results = []
    for run in range(RUNS):
        out = tmp_path / f"pool-{run}.txt"
        job, _ = submit_job(
            factory, dispatcher, "tests.append_line", {"path": str(out), "sleep_s": JOB_SECONDS}
        )
        wait_until_running(kill_settings, job.id)
        (child,) = workers.pool_children(worker)
        child.send_signal(signal.SIGKILL)  # mid-job: the body is still sleeping
        results.append(outcome(kill_settings, job.id, out))
    assert report("pool process killed", results) == (0, 0)
    # Each job ran twice (killed, then again) and wrote once.
    assert [job.attempts for job, _ in results] == [2] * RUNS
    assert worker.poll() is None  # the worker itself lived on and replaced its pool process


def test_a_killed_worker_gives_its_job_to_the_next_worker(
    kill_settings: Settings, workers: Workers, dispatcher: CeleryDispatcher, tmp_path: Path
) -> None:
    factory = get_session_factory(kill_settings.database_url)
    results = []
    for run in range(RUNS):
        worker = workers.start()
        wait_until_ready(dispatcher, worker)
        out = tmp_path / f"worker-{run}.txt"
        job, _ = submit_job(
            factory, dispatcher, "tests.append_line", {"path": str(out), "sleep_s": JOB_SECONDS}
        )
        wait_until_running(kill_settings, job.id)
        workers.kill_all(worker)  # the whole machine gone: nothing acknowledged, nothing said
        replacement = workers.start()
        wait_until_ready(dispatcher, replacement)
        results.append(outcome(kill_settings, job.id, out))
        workers.kill_all(replacement)
    assert report("whole worker killed", results) == (0, 0)
    assert all(job.attempts == 2 for job, _ in results)


def test_a_training_job_killed_mid_training_records_one_version(
    kill_settings: Settings, tmp_path: Path
) -> None:
    # A gpu worker runs jobs in its own process (solo pool), so its death is the whole worker's
    # and the message comes back after the visibility timeout: kept short here.
    limits = {"job_time_limit_s": 15, "broker_visibility_timeout_s": 18}
    settings = kill_settings.model_copy(update=limits)
    factory = get_session_factory(settings.database_url)
    base = make_tiny_bert(tmp_path / "base")
    data = tmp_path / "tickets.jsonl"
    examples = keyword_intents(12)
    data.write_text(
        "".join(
            json.dumps({"text": text, "label": label}) + "\n"
            for text, label in zip(examples.texts, examples.labels, strict=True)
        )
    )
    arguments = {  # about 6 s of training, so that the kill lands in the middle
        "strategy": "full",
        "max_steps": 600,
        "early_stopping_patience": None,
        "max_length": 24,
        "batch_size": 8,
    }
    started, dispatcher = Workers(settings, tmp_path), create_dispatcher(settings)
    assert isinstance(dispatcher, CeleryDispatcher)
    results: list[tuple[Job, int]] = []
    try:
        for run in range(TRAINING_RUNS):
            worker = started.start(queues="gpu", pool="solo")
            wait_until_ready(dispatcher, worker)
            name = f"killed-{run}"
            params = {"model_name": name, "data_path": str(data), "base_model": str(base)}
            job, _ = submit_job(
                factory, dispatcher, "core.train_classifier", {**params, "arguments": arguments}
            )
            wait_for_job(
                factory,
                job.id,
                timeout_s=120,
                until=lambda job: job is not None and 0.2 <= job.progress < 0.9,
            )
            started.kill_all(worker)  # mid-training: steps done, nothing recorded
            replacement = started.start(queues="gpu", pool="solo")
            done = wait_for_job(factory, job.id, timeout_s=120)
            started.kill_all(replacement)
            with factory() as session:
                versions = session.scalars(
                    select(ModelVersion).where(ModelVersion.name == name)
                ).all()
                runs = session.scalars(select(TrainingRun).where(TrainingRun.job_id == job.id))
                assert [run.status for run in runs] == [done.status]
            results.append((done, len(versions)))
            if versions:
                assert versions[0].stage is ModelStage.PRODUCTION
                load_classifier(Path(versions[0].artifact_path), choose_placement("cpu"))
    finally:
        started.stop()
        dispatcher.close()
    assert report("training job killed", results) == (0, 0)
    assert [job.attempts for job, _ in results] == [2] * TRAINING_RUNS
