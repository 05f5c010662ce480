"""Tuning the item encoder on behaviour: items the same users engage with become pairs.

For each user, events in time order; every item and the next `window` distinct items the user
engaged with after it form a pair (anchor text, positive text). Pairs shared by many users
come first when `max_pairs` caps them. The encoder is tuned with in-batch negatives (core's
`train_embeddings`); the new version is promoted when its held-out retrieval is not worse, and
the job then embeds the catalogue with it. The service keeps serving the previous encoder's
vectors until the new ones cover the catalogue.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from apps.recommend.catalogue import text_of
from apps.recommend.embeddings import embed_pending
from apps.recommend.models import Interaction, Item
from apps.recommend.settings import RecommendSettings
from core.ml.runs import Progress, PromotionPolicy, RunOutcome, run_embedding_training
from core.ml.training import EmbeddingTrainingArguments, data_fingerprint
from core.scheduling import Retraining
from core.settings import Settings
from core.storage.base import utcnow
from core.storage.engine import in_slices

TRAIN_JOB = "recommend.train"
RETRAIN_WORK = "recommender retraining"


class RecommendTrainParams(BaseModel):
    """Parameters of a `recommend.train` job."""

    model_config = ConfigDict(extra="forbid")

    arguments: dict[str, Any] = Field(
        default_factory=dict, description="EmbeddingTrainingArguments"
    )
    promotion: PromotionPolicy = PromotionPolicy.IF_NOT_WORSE
    days: int = Field(default=180, ge=1, le=36_500, description="Events from this many days back.")
    window: int = Field(default=2, ge=1, le=20, description="Items after each that pair with it.")
    max_pairs: int = Field(
        default=20_000, ge=2, le=100_000_000, description="The most common pairs kept."
    )
    min_pairs: int = Field(
        default=16, ge=2, le=100_000_000, description="Refuse to train on fewer pairs."
    )

    @field_validator("arguments")
    @classmethod
    def _check_arguments(cls, value: dict[str, Any]) -> dict[str, Any]:
        EmbeddingTrainingArguments.from_dict(value)
        return value


class NotEnoughBehaviour(ValueError):
    """Too few co-engaged items to tune the encoder on."""


def behaviour_pairs(
    session: Session, since: dt.datetime, window: int, max_pairs: int
) -> list[tuple[str, str]]:
    """(anchor text, positive text) pairs of items users engaged with one after the other."""
    rows = session.execute(
        select(Interaction.user_id, Interaction.item_id)
        .where(Interaction.occurred_at >= since)
        .order_by(Interaction.user_id, Interaction.occurred_at, Interaction.id)
    ).all()
    counts: Counter[tuple[uuid.UUID, uuid.UUID]] = Counter()
    sequence: list[uuid.UUID] = []
    user = None
    for user_id, item_id in [*rows, (None, None)]:  # a sentinel flushes the last user
        if user_id != user:
            for pair in _pairs(sequence, window):
                counts[pair] += 1
            user, sequence = user_id, []
        if item_id is not None and (not sequence or sequence[-1] != item_id):
            sequence.append(item_id)
    chosen = [pair for pair, _ in counts.most_common(max_pairs)]
    ids = {item_id for pair in chosen for item_id in pair}
    texts = {
        item.id: text_of(item)
        for chunk in in_slices(ids)
        for item in session.scalars(select(Item).where(Item.id.in_(chunk)))
    }
    return [(texts[a], texts[b]) for a, b in chosen]


def _pairs(sequence: list[uuid.UUID], window: int) -> set[tuple[uuid.UUID, uuid.UUID]]:
    """Unordered pairs (smaller id first) of items at most `window` steps apart; one user
    counts a pair once."""
    found = set()
    for i, anchor in enumerate(sequence):
        for other in sequence[i + 1 : i + 1 + window]:
            if other != anchor:
                found.add((min(anchor, other), max(anchor, other)))
    return found


def retraining(recommend: RecommendSettings, factory: sessionmaker[Session]) -> Retraining:
    """Scheduled retraining (`recommend.retrain_every_h`): due when the pairs of co-engaged
    items changed since the last run (new events, or old ones out of its window), and there
    are enough of them."""

    def fingerprint(raw: Mapping[str, Any]) -> str | None:
        params = RecommendTrainParams.model_validate(raw)
        with factory() as session:
            pairs = behaviour_pairs(
                session, utcnow() - dt.timedelta(days=params.days), params.window, params.max_pairs
            )
        return data_fingerprint(pairs) if len(pairs) >= params.min_pairs else None

    every_h = recommend.retrain_every_h
    return Retraining(RETRAIN_WORK, recommend.model_name, TRAIN_JOB, every_h, factory, fingerprint)


def train_recommend_encoder(
    settings: Settings,
    recommend: RecommendSettings,
    factory: sessionmaker[Session],
    params: RecommendTrainParams,
    *,
    job_id: uuid.UUID | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Tune a new encoder version on behaviour; when promoted, embed the catalogue with it."""
    since = utcnow() - dt.timedelta(days=params.days)
    with factory() as session:
        pairs = behaviour_pairs(session, since, params.window, params.max_pairs)
    if len(pairs) < params.min_pairs:
        raise NotEnoughBehaviour(
            f"only {len(pairs)} pairs of co-engaged items in the last {params.days} days; "
            f"need {params.min_pairs} (record more events, or lower min_pairs)"
        )

    def report(fraction: float, message: str | None = None) -> None:
        if progress is not None:
            progress(0.8 * fraction, message)

    outcome: RunOutcome = run_embedding_training(
        settings,
        factory,
        model_name=recommend.model_name,
        base_reference=recommend.base_model,
        pairs=pairs,
        arguments=EmbeddingTrainingArguments.from_dict(params.arguments),
        job_id=job_id,
        progress=report,
        promotion=params.promotion,
    )
    result = {**outcome.as_result(), "pairs": len(pairs)}
    if outcome.promoted:
        embedded = embed_pending(
            settings,
            recommend,
            factory,
            progress=lambda f, m: progress(0.8 + 0.2 * f, m) if progress else None,
        )
        result["embedded"] = embedded["embedded"]
    return result
