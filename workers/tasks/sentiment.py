"""Sentiment monitor jobs: training the finance sentiment model, and scoring stored articles
again with a newly promoted one."""

from __future__ import annotations

from typing import Any

from apps.sentiment.scoring import RESCORE_JOB, RescoreParams, SentimentScorer
from apps.sentiment.settings import get_sentiment_settings
from apps.sentiment.training import TRAIN_JOB, SentimentTrainParams, train_sentiment
from core.jobs import JobContext
from core.ml.serving import ProductionClassifier
from workers.registry import job_task


@job_task(TRAIN_JOB, queue="gpu", max_retries=0, params=SentimentTrainParams)
def train_sentiment_model(ctx: JobContext) -> dict[str, Any]:
    """Train a new sentiment model version; promoted when it is not worse than production."""
    params = SentimentTrainParams.model_validate(ctx.params)
    outcome = train_sentiment(
        ctx.settings,
        get_sentiment_settings(),
        ctx.session_factory,
        params,
        job_id=ctx.job_id,
        progress=ctx.progress,
    )
    return outcome.as_result()


@job_task(RESCORE_JOB, queue="gpu", max_retries=0, params=RescoreParams)
def rescore_articles(ctx: JobContext) -> dict[str, Any]:
    """Score the stored articles again with the production version (those another scored)."""
    params = RescoreParams.model_validate(ctx.params)
    model = ProductionClassifier(
        ctx.settings, ctx.session_factory, get_sentiment_settings().model_name
    )
    rescored, version = SentimentScorer(model).rescore_others(
        ctx.session_factory, since=params.since, progress=ctx.progress
    )
    return {"rescored": rescored, "model_version": version}
