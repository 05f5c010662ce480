"""The sweep for items left without a vector (a job that gave up, an import cut short)."""

from __future__ import annotations

import datetime as dt
import uuid

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from apps.recommend.catalogue import ItemIn, upsert_items
from apps.recommend.embeddings import EMBED_JOB, embed_if_pending, store_vectors
from apps.recommend.models import Item
from apps.recommend.service import periodic_work
from apps.recommend.settings import load_recommend_settings
from core.jobs import JobKindSpec
from core.storage.base import utcnow
from core.storage.engine import session_scope
from core.storage.models import Job, JobStatus


class Recording:
    """The broker's edge: records what would be sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[uuid.UUID, str, str]] = []

    def spec_for(self, kind: str) -> JobKindSpec:
        return JobKindSpec("inference")

    def dispatch(self, job_id: uuid.UUID, kind: str, queue: str) -> None:
        self.sent.append((job_id, kind, queue))


def test_items_left_without_a_vector_get_an_embedding_job(
    session_factory: sessionmaker[Session],
) -> None:
    recommend = load_recommend_settings(_env_file=None, embed_sweep_s=600)
    dispatcher = Recording()
    assert embed_if_pending(recommend, session_factory, dispatcher) is None  # nothing to do
    with session_scope(session_factory) as session:
        ids = upsert_items(session, [ItemIn(external_id="A", title="Tent")]).to_embed

    first = embed_if_pending(recommend, session_factory, dispatcher)
    assert first is not None and dispatcher.sent == [(first, EMBED_JOB, "inference")]
    assert embed_if_pending(recommend, session_factory, dispatcher) is None  # one is queued

    # It gave up (say the model could not load): another only once the period has passed.
    with session_scope(session_factory) as session:
        session.execute(update(Job).values(status=JobStatus.FAILED))
    assert embed_if_pending(recommend, session_factory, dispatcher) is None
    with session_scope(session_factory) as session:
        session.execute(update(Job).values(created_at=utcnow() - dt.timedelta(seconds=601)))
    second = embed_if_pending(recommend, session_factory, dispatcher)
    assert second is not None and second != first

    with session_scope(session_factory) as session:
        session.execute(update(Job).values(created_at=utcnow() - dt.timedelta(hours=1)))
        session.execute(update(Job).values(status=JobStatus.SUCCEEDED))
    with session_factory() as session:
        digest = session.scalar(select(Item.text_hash).where(Item.id == ids[0]))
    vectors = np.ones((1, 4), dtype=np.float32)
    store_vectors(session_factory, f"model:{recommend.base_model}", ids, vectors, [digest])
    assert embed_if_pending(recommend, session_factory, dispatcher) is None  # all embedded
    assert len(dispatcher.sent) == 2


def test_the_sweep_is_periodic_work_unless_turned_off(
    session_factory: sessionmaker[Session],
) -> None:
    on = periodic_work(load_recommend_settings(_env_file=None), session_factory, Recording())
    assert on["recommender embedding sweep"][0] == 900.0
    off = load_recommend_settings(_env_file=None, embed_sweep_s=0)
    assert "recommender embedding sweep" not in periodic_work(off, session_factory, Recording())
