"""Delivering alert notifications to webhook targets, with retries."""

from __future__ import annotations

from typing import Any

from apps.sentiment.notify import NOTIFY_JOB, NotifyParams, deliver
from apps.sentiment.settings import get_sentiment_settings
from core.delivery import RETRIES, RETRY_BACKOFF_S, DeliveryUnavailable
from core.jobs import JobContext, TransientJobError
from workers.registry import job_task


@job_task(
    NOTIFY_JOB,
    queue="default",
    max_retries=RETRIES,
    retry_backoff_s=RETRY_BACKOFF_S,
    params=NotifyParams,
)
def notify_alert(ctx: JobContext) -> dict[str, Any]:
    """POST one alert notification (Slack-compatible JSON) to one target."""
    params = NotifyParams.model_validate(ctx.params)
    with ctx.session() as session:
        try:
            status_code = deliver(
                session,
                params,
                delivery_id=str(ctx.job_id),
                timeout_s=get_sentiment_settings().notify_timeout_s,
            )
        except DeliveryUnavailable as exc:
            raise TransientJobError(str(exc)) from None
    if status_code is None:
        return {"skipped": "the alert resolved before this notice got through"}
    return {"status_code": status_code}
