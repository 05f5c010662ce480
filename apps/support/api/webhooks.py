"""The generic signed webhook, for helpdesks other than Chatwoot."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, status
from starlette.concurrency import run_in_threadpool

from apps.support.api.deps import BotDep, SupportSettingsDep
from apps.support.api.inbound import (
    parse_json_object,
    read_signed_body,
    submit_delivery,
    validate_body,
)
from apps.support.helpdesk_webhook import (
    CALLBACK_JOB,
    HEADER_PREFIX,
    HelpdeskMessage,
    HelpdeskReply,
    HelpdeskWebhookResponse,
)
from core.api.deps import DispatcherDep, SessionFactoryDep

router = APIRouter(tags=["support: webhooks"])


@router.post(
    "/webhooks/messages",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=HelpdeskWebhookResponse,
    responses={
        401: {"description": "Missing, wrong or stale X-Textsuite-Signature."},
        404: {"description": "TEXTSUITE_SUPPORT_WEBHOOK_SECRET is not set (the endpoint is off)."},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": HelpdeskMessage.model_json_schema()}},
        }
    },
)
async def helpdesk_message(
    request: Request,
    bot: BotDep,
    support: SupportSettingsDep,
    factory: SessionFactoryDep,
    dispatcher: DispatcherDep,
) -> HelpdeskWebhookResponse:
    """Answer a customer message from any helpdesk.

    Sign the raw body: `X-Textsuite-Timestamp: <unix seconds>` and
    `X-Textsuite-Signature: sha256=<hex HMAC-SHA256(secret, "{timestamp}.{body}")>`.
    The reply comes back in the response and, when a callback URL is configured, as a signed
    POST to it (retried by a background job until the helpdesk takes it).
    """
    if support.webhook_secret is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            "the helpdesk webhook is off: set TEXTSUITE_SUPPORT_WEBHOOK_SECRET "
            "to the secret your helpdesk signs requests with",
        )
    body = await read_signed_body(
        request,
        secret=support.webhook_secret,
        header_prefix=HEADER_PREFIX,
        tolerance_s=support.signature_tolerance_s,
        source="helpdesk",
    )
    message = validate_body(HelpdeskMessage, parse_json_object(body))
    reply = await bot.handle(message.to_incoming())
    result = HelpdeskReply.from_bot(message, reply)
    job_id = None
    if support.callback_url is not None:
        job_id, _ = await run_in_threadpool(
            submit_delivery,
            factory,
            dispatcher,
            CALLBACK_JOB,
            result.model_dump(mode="json"),
            f"{CALLBACK_JOB}:{reply.message_id}",
        )
    return HelpdeskWebhookResponse(
        **result.model_dump(), duplicate=reply.duplicate, callback_job_id=job_id
    )
