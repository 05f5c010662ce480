"""The recommender's jobs on a real Celery worker against PostgreSQL and Redis: embedding the
catalogue, then tuning the encoder on behaviour, after which the service serves the new
encoder's vectors only once they cover the catalogue."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select, update

from apps.recommend.catalogue import ItemIn, upsert_items
from apps.recommend.embeddings import EMBED_JOB
from apps.recommend.events import EventIn, record_events
from apps.recommend.models import ItemEmbedding
from apps.recommend.settings import load_recommend_settings
from apps.recommend.state import CatalogueState
from apps.recommend.training import retraining
from core.jobs import submit_job
from core.settings import Settings
from core.storage.engine import get_session_factory, session_scope
from core.storage.models import Job, JobStatus, ModelStage, ModelVersion, TrainingRun
from tests.conftest import _truncate
from tests.workers.conftest import wait_for_job

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

KINDS = {
    "tent": ["Storm tent", "Alpine tent", "Tunnel tent", "Dome tent"],
    "stove": ["Gas stove", "Wood stove", "Twin burner", "Alcohol stove"],
}


def test_embedding_and_behaviour_tuning_on_the_worker(
    worker_settings: Settings, celery_worker
) -> None:
    from workers.dispatch import create_dispatcher

    factory = get_session_factory(worker_settings.database_url)
    items = [
        ItemIn(external_id=f"{kind}-{i}", title=title, category=kind)
        for kind, titles in KINDS.items()
        for i, title in enumerate(titles)
    ]
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    events = [
        EventIn(
            event_id=f"{kind}-{user}-{n}",
            user_id=f"{kind}-fan-{user}",
            item_id=f"{kind}-{(user + n) % 4}",
            type="view",
            timestamp=start + dt.timedelta(minutes=n),
        )
        for kind in KINDS
        for user in range(6)
        for n in range(4)
    ]
    with session_scope(factory) as session:
        upsert_items(session, items)
        record_events(session, events)
    recommend = load_recommend_settings(_env_file=None)
    dispatcher = create_dispatcher(worker_settings)
    try:
        embedded = wait_for_job(factory, submit_job(factory, dispatcher, EMBED_JOB, {})[0].id)
        assert embedded.status is JobStatus.SUCCEEDED, embedded.error
        assert embedded.result == {"embedded": 8, "encoder": "model:all-MiniLM-L6-v2"}
        state = CatalogueState(worker_settings, recommend, factory)
        state.refresh()
        assert state.encoder.key == "model:all-MiniLM-L6-v2" and len(state.index) == 8

        params = {"arguments": {"max_steps": 3, "batch_size": 4}, "min_pairs": 4}
        job, _ = submit_job(factory, dispatcher, "recommend.train", params)
        assert job.queue == "gpu"
        done = wait_for_job(factory, job.id, timeout_s=300)
        assert done.status is JobStatus.SUCCEEDED, done.error
        assert done.worker.split(":")[1] == str(celery_worker.pid)
        assert done.result["promoted"] is True and done.result["embedded"] == 8
        assert done.result["pairs"] >= 4
        assert done.result["metrics"]["n_train"] == done.result["pairs"]
        with factory() as session:
            version = session.scalars(select(ModelVersion)).one()
            vectors = session.scalar(
                select(func.count())
                .select_from(ItemEmbedding)
                .where(ItemEmbedding.encoder == f"version:{version.id}")
            )
        assert (version.name, version.task, version.stage) == (
            "recommend-encoder",
            "embedding",
            ModelStage.PRODUCTION,
        )
        assert vectors == 8
        state.refresh()  # the new encoder covers the catalogue: the service switches to it
        assert state.encoder.key == f"version:{version.id}" and len(state.index) == 8

        # Scheduled retraining: the pairs the run trained on are the ones there are now, so
        # nothing is due until a shopper's new events add a pair; then the same recipe again.
        tuning = load_recommend_settings(_env_file=None, retrain_every_h=1.0)
        with session_scope(factory) as session:  # the last training was a day ago
            session.execute(update(TrainingRun).values(created_at=start))
            session.execute(update(Job).values(created_at=start))
        unchanged = retraining(tuning, factory).check(dispatcher)
        assert unchanged.reason == "no new training data since the last run"
        with session_scope(factory) as session:
            record_events(session, [
                EventIn(event_id=f"new-{n}", user_id="new-shopper", item_id=item, type="view",
                        timestamp=start + dt.timedelta(hours=2, minutes=n))
                for n, item in enumerate(["tent-0", "stove-1"])
            ])  # fmt: skip
        due = retraining(tuning, factory).check(dispatcher)
        assert due.job_id is not None, due.reason
        again = wait_for_job(factory, due.job_id, timeout_s=300)
        assert again.status is JobStatus.SUCCEEDED, again.error
        assert again.params == {**done.params, "promotion": "if-not-worse"}
        assert again.result["pairs"] == done.result["pairs"] + 1
    finally:
        dispatcher.close()
        _truncate(worker_settings.database_url)
