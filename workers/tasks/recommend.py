"""Recommender jobs: embedding new and changed catalogue items, tuning the item encoder."""

from __future__ import annotations

from typing import Any

from apps.recommend.embeddings import EMBED_JOB, embed_pending
from apps.recommend.settings import get_recommend_settings
from apps.recommend.training import TRAIN_JOB, RecommendTrainParams, train_recommend_encoder
from core.jobs import JobContext, NoParams
from workers.registry import job_task


@job_task(EMBED_JOB, queue="inference", max_retries=2, params=NoParams)
def embed_items(ctx: JobContext) -> dict[str, Any]:
    """Embed every item without a vector from the current encoder (resumes where it stopped)."""
    return embed_pending(
        ctx.settings, get_recommend_settings(), ctx.session_factory, progress=ctx.progress
    )


@job_task(TRAIN_JOB, queue="gpu", max_retries=0, params=RecommendTrainParams)
def train_item_encoder(ctx: JobContext) -> dict[str, Any]:
    """Tune a new item encoder version on behaviour; embed the catalogue when it is promoted."""
    return train_recommend_encoder(
        ctx.settings,
        get_recommend_settings(),
        ctx.session_factory,
        RecommendTrainParams.model_validate(ctx.params),
        job_id=ctx.job_id,
        progress=ctx.progress,
    )
