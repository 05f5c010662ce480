"""Delivering the support bot's replies: to Chatwoot's API, and to generic helpdesk callbacks.

Both retry network errors, 5xx and 429 with exponential backoff (0.5 s doubling, capped at ten
minutes: the retries cover about a day of outage, `core.delivery.RETRIES`); any other 4xx
fails the job with the helpdesk's reason. Tokens and secrets come from the worker's
`TEXTSUITE_SUPPORT_*` settings, never from job parameters.
"""

from __future__ import annotations

from typing import Any

from apps.support.chatwoot import (
    REPLY_JOB,
    ChatwootClient,
    ChatwootReplyParams,
    deliver_reply,
)
from apps.support.helpdesk_webhook import CALLBACK_JOB, HelpdeskReply, send_callback
from apps.support.settings import get_support_settings
from core.delivery import RETRIES, RETRY_BACKOFF_S, DeliveryUnavailable
from core.jobs import JobContext, TransientJobError
from core.storage.models import Job
from workers.registry import job_task

# A handoff's finished steps live in the job's progress message, which survives retries.
_STEPS_PREFIX = "chatwoot steps done: "


def _steps_done(ctx: JobContext) -> dict[str, Any]:
    with ctx.session() as session:
        job = session.get(Job, ctx.job_id)
        message = job.progress_message if job is not None else None
    if not message or not message.startswith(_STEPS_PREFIX):
        return {}
    steps: dict[str, Any] = {}
    for item in message.removeprefix(_STEPS_PREFIX).split(","):
        name, _, value = item.partition("=")
        steps[name] = int(value) if value.isdigit() else (value or None)
    return steps


@job_task(
    REPLY_JOB,
    queue="default",
    max_retries=RETRIES,
    retry_backoff_s=RETRY_BACKOFF_S,
    params=ChatwootReplyParams,
    personal_params=True,
)
def chatwoot_reply(ctx: JobContext) -> dict[str, Any]:
    """Post the bot's answer, or hand the conversation to agents (private note, then open)."""
    params = ChatwootReplyParams.model_validate(ctx.params)
    done = _steps_done(ctx)

    def record(step: str, value: Any) -> None:
        done[step] = value
        steps = ",".join(f"{name}={'' if v is None else v}" for name, v in done.items())
        ctx.progress(0.5, f"{_STEPS_PREFIX}{steps}")

    with ChatwootClient.from_settings(get_support_settings()) as client:
        try:
            return deliver_reply(client, params, done=done, record=record)
        except DeliveryUnavailable as exc:
            raise TransientJobError(str(exc)) from None


@job_task(
    CALLBACK_JOB,
    queue="default",
    max_retries=RETRIES,
    retry_backoff_s=RETRY_BACKOFF_S,
    params=HelpdeskReply,
    personal_params=True,
)
def webhook_callback(ctx: JobContext) -> dict[str, Any]:
    """POST the signed reply to the helpdesk's callback URL."""
    reply = HelpdeskReply.model_validate(ctx.params)
    try:
        status_code = send_callback(get_support_settings(), reply, delivery_id=str(ctx.job_id))
    except DeliveryUnavailable as exc:
        raise TransientJobError(str(exc)) from None
    return {"status_code": status_code}
