"""Support bot jobs: retraining the intent model from the catalogue."""

from __future__ import annotations

from typing import Any

from apps.support.settings import get_support_settings
from apps.support.training import TRAIN_JOB, SupportTrainParams, train_from_catalogue
from core.jobs import JobContext
from core.ml.training import TrainingArguments
from workers.registry import job_task


@job_task(TRAIN_JOB, queue="gpu", max_retries=0, params=SupportTrainParams)
def train_support_model(ctx: JobContext) -> dict[str, Any]:
    """Train a new intent model version; promoted when it is not worse than production."""
    params = SupportTrainParams.model_validate(ctx.params)
    outcome = train_from_catalogue(
        ctx.settings,
        get_support_settings(),
        ctx.session_factory,
        arguments=TrainingArguments.from_dict(params.arguments),
        job_id=ctx.job_id,
        progress=ctx.progress,
        promotion=params.promotion,
    )
    return outcome.as_result()
