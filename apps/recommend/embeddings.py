"""Item embeddings: which encoder the recommender uses, and embedding what is not embedded yet.

The encoder is the production version of the recommender's own model (`recommend-encoder`,
fine-tuned on behaviour) when there is one, else the configured base encoder. Its `key` names
it in the embeddings table (`version:<id>` or `model:<reference>`), so vectors of two encoders
never mix and a newly promoted encoder re-embeds the catalogue in the background while the old
vectors keep serving.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import Select, and_, or_, select
from sqlalchemy.orm import Session, sessionmaker

from apps.recommend.catalogue import text_of
from apps.recommend.models import Item, ItemEmbedding
from apps.recommend.settings import RecommendSettings
from core.jobs import JobDispatcher, submit_job
from core.ml.device import configured_placement
from core.ml.loading import load_encoder, model_cache
from core.ml.offline import stream_keyed_predictions
from core.ml.predictors import TextEncoder
from core.ml.references import resolve_model
from core.ml.versions import production_version
from core.settings import Settings
from core.storage.base import utcnow
from core.storage.engine import in_slices, upsert_statement
from core.storage.models import Job, JobStatus, ModelVersion

log = logging.getLogger(__name__)

EMBED_JOB = "recommend.embed"
SWEEP_WORK = "recommender embedding sweep"  # as periodic work (`embed_if_pending`)


@dataclass(frozen=True)
class EncoderChoice:
    key: str  # how the embeddings table names this encoder
    folder: Path


def choose_encoder(
    settings: Settings, recommend: RecommendSettings, factory: sessionmaker[Session]
) -> EncoderChoice:
    with factory() as session:
        version = production_version(session, recommend.model_name)
        if version is not None:
            return EncoderChoice(encoder_key(version, recommend), Path(version.artifact_path))
    resolved = resolve_model(
        recommend.base_model, cache_dir=settings.model_cache_dir, session_factory=factory
    )
    return EncoderChoice(encoder_key(None, recommend), resolved.path)


def encoder_key(version: ModelVersion | None, recommend: RecommendSettings) -> str:
    """How the embeddings table names the encoder: the production version, else the base."""
    return f"version:{version.id}" if version is not None else f"model:{recommend.base_model}"


def load_item_encoder(settings: Settings, choice: EncoderChoice) -> TextEncoder:
    """The encoder, loaded once per process."""
    placement = configured_placement(settings)
    return model_cache().get(
        choice.folder, "encoder", placement, lambda: load_encoder(choice.folder, placement)
    )


def pending_items(session: Session, encoder_key: str) -> list[tuple[uuid.UUID, str, str]]:
    """(item id, text, text hash) of items with no vector from this encoder for their text."""
    rows = session.execute(_pending(encoder_key).order_by(Item.created_at, Item.id)).scalars()
    return [(item.id, text_of(item), item.text_hash) for item in rows]


def _pending(encoder_key: str) -> Select[tuple[Item]]:
    stored = and_(ItemEmbedding.item_id == Item.id, ItemEmbedding.encoder == encoder_key)
    return (
        select(Item)
        .outerjoin(ItemEmbedding, stored)
        .where(or_(ItemEmbedding.item_id.is_(None), ItemEmbedding.text_hash != Item.text_hash))
    )


def embed_if_pending(
    recommend: RecommendSettings, factory: sessionmaker[Session], dispatcher: JobDispatcher
) -> uuid.UUID | None:
    """Start the embedding job where items wait for a vector from the current encoder and no
    embedding job is queued or running or was started within `embed_sweep_s`: so items are
    embedded after a job that gave up or an import cut short, without waiting for the next
    change. Returns the job's id, or None where none was started."""
    since = utcnow() - dt.timedelta(seconds=recommend.embed_sweep_s)
    with factory() as session:
        key = encoder_key(production_version(session, recommend.model_name), recommend)
        if session.scalar(_pending(key).limit(1)) is None:
            return None
        recent = select(Job.id).where(
            Job.kind == EMBED_JOB,
            or_(Job.created_at >= since, Job.status.in_(JobStatus.unfinished())),
        )
        if session.scalar(recent.limit(1)) is not None:
            return None
        newest = session.scalar(
            select(Job.id).where(Job.kind == EMBED_JOB).order_by(Job.created_at.desc()).limit(1)
        )
    job, created = submit_job(
        factory,
        dispatcher,
        EMBED_JOB,
        {},
        # Named after the newest embedding job: processes sweeping at once start one between them.
        idempotency_key=f"embed-sweep:after:{newest}",
        dispatch_later_if_down=True,
    )
    if not created:
        return None
    log.info("items wait for vectors and no embedding job is under way: job %s started", job.id)
    return job.id


def embed_pending(
    settings: Settings,
    recommend: RecommendSettings,
    factory: sessionmaker[Session],
    *,
    progress: Callable[[float, str | None], None] | None = None,
    show_progress: bool = False,
) -> dict[str, object]:
    """Embed every item that has no current vector; commit each chunk as it is done, so an
    interrupted run keeps its work and the next one resumes."""
    choice = choose_encoder(settings, recommend, factory)
    with factory() as session:
        pending = pending_items(session, choice.key)
    if not pending:
        return {"embedded": 0, "encoder": choice.key}
    encoder = load_item_encoder(settings, choice)
    hashes = {item_id: digest for item_id, _, digest in pending}

    def report(done: int, total: int | None) -> None:
        if progress is not None:
            progress(done / max(total or done, 1), f"embedded {done} of {total} items")

    chunks: Iterator[tuple[list[uuid.UUID], np.ndarray]] = stream_keyed_predictions(
        encoder,
        [(item_id, text) for item_id, text, _ in pending],
        chunk_size=recommend.embed_chunk,
        progress=report,
        show_progress=show_progress,
    )
    for ids, vectors in chunks:
        store_vectors(factory, choice.key, ids, vectors, [hashes[i] for i in ids])
    return {"embedded": len(pending), "encoder": choice.key}


def store_vectors(
    factory: sessionmaker[Session],
    encoder_key: str,
    item_ids: list[uuid.UUID],
    vectors: np.ndarray,
    text_hashes: list[str],
) -> None:
    """Insert or replace the items' vectors in one statement per slice, so two runs storing
    the same items at once (a training job's and an embedding job's) both succeed."""
    now = utcnow()
    rows = [
        {
            "item_id": item_id,
            "encoder": encoder_key,
            "text_hash": digest,
            "vector": np.asarray(vector, dtype="<f4").tobytes(),
            "created_at": now,  # the service reads the vectors stored since its last look
        }
        for item_id, vector, digest in zip(item_ids, vectors, text_hashes, strict=True)
    ]
    with factory.begin() as session:
        for chunk in in_slices(rows, 1000):
            insert = upsert_statement(session, ItemEmbedding).values(list(chunk))
            replaced = {
                name: insert.excluded[name] for name in ("text_hash", "vector", "created_at")
            }
            session.execute(
                insert.on_conflict_do_update(
                    index_elements=[ItemEmbedding.item_id, ItemEmbedding.encoder], set_=replaced
                )
            )


def as_vector(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4")
