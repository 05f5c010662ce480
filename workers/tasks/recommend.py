"""Recommender jobs: embedding new and changed catalogue items."""

from __future__ import annotations

from typing import Any

from apps.recommend.embeddings import EMBED_JOB, embed_pending
from apps.recommend.settings import get_recommend_settings
from core.jobs import JobContext
from workers.registry import job_task


@job_task(EMBED_JOB, queue="gpu", max_retries=2)
def embed_items(ctx: JobContext) -> dict[str, Any]:
    """Embed every item without a vector from the current encoder (resumes where it stopped)."""
    return embed_pending(
        ctx.settings, get_recommend_settings(), ctx.session_factory, progress=ctx.progress
    )
