"""Chatwoot's agent-bot webhook: answer customers in pending conversations, hand off the rest."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from starlette.concurrency import run_in_threadpool

from apps.support.api.deps import BotDep, SupportSettingsDep
from apps.support.api.inbound import (
    parse_json_object,
    read_signed_body,
    submit_delivery,
    validate_body,
)
from apps.support.chatwoot import (
    DELIVERY_HEADER,
    REPLY_JOB,
    ChatwootEvent,
    ChatwootMessageCreated,
    give_back_if_pending_again,
    ignore_reason,
    message_ignore_reason,
    missing_webhook_settings,
    reply_job_key,
    reply_params,
    to_incoming,
)
from core.api.deps import DispatcherDep, SessionFactoryDep

log = logging.getLogger(__name__)

router = APIRouter(tags=["support: chatwoot"])


@router.post(
    "/chatwoot/webhook",
    responses={
        401: {"description": "Missing, wrong or stale X-Chatwoot-Signature."},
        404: {"description": "Chatwoot is not configured (the endpoint is off)."},
    },
)
async def chatwoot_webhook(
    request: Request,
    bot: BotDep,
    support: SupportSettingsDep,
    factory: SessionFactoryDep,
    dispatcher: DispatcherDep,
) -> dict[str, Any]:
    """Set this URL as the agent bot's webhook in Chatwoot.

    Only `message_created` events for incoming, public messages in `pending` conversations are
    answered; anything else comes back as `{"ignored": "<reason>"}`. The reply is sent through
    Chatwoot's API by a background job (`support.chatwoot_reply`), so this returns at once and a
    Chatwoot outage delays a reply instead of losing it. A redelivered webhook is answered once.
    """
    missing = missing_webhook_settings(support)
    if missing:
        # Off until configured: a missing setting is no passing outage worth retrying (5xx).
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"the Chatwoot integration is not configured: set {', '.join(missing)}",
        )
    body = await read_signed_body(
        request,
        secret=support.chatwoot_webhook_secret,
        header_prefix="X-Chatwoot",
        tolerance_s=support.signature_tolerance_s,
        source="Chatwoot",
    )
    data = parse_json_object(body)
    reason = ignore_reason(validate_body(ChatwootEvent, data))
    if reason is None:
        message = validate_body(ChatwootMessageCreated, data)
        reason = message_ignore_reason(message)
    if reason is not None:
        return {"ignored": reason}

    incoming = to_incoming(message)
    delivery = request.headers.get(DELIVERY_HEADER)
    given_back = await run_in_threadpool(give_back_if_pending_again, factory, message)
    if given_back:
        log.info("chatwoot conversation %s is the bot's again", incoming.conversation_id)
    reply = await bot.handle(incoming)
    params = reply_params(incoming, reply)
    outcome: dict[str, Any] = {
        "message_id": str(reply.message_id),
        "chatwoot_message_id": incoming.message_id,
        "delivery": delivery,
        "duplicate": reply.duplicate,
        "handoff": reply.handoff,
    }
    if params is None:
        log.warning("the bot neither answered nor handed off", extra=outcome)
        return {**outcome, "action": None, "job_id": None}
    job_id, created = await run_in_threadpool(
        submit_delivery,
        factory,
        dispatcher,
        REPLY_JOB,
        params.model_dump(mode="json"),
        reply_job_key(reply.message_id),
    )
    log.info(
        "chatwoot message %s: %s queued as job %s",
        incoming.message_id,
        params.action,
        job_id,
        extra={"delivery": delivery, "job_created": created},
    )
    return {**outcome, "action": params.action, "job_id": str(job_id), "job_created": created}
