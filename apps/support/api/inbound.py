"""What both helpdesk webhooks share: a signed raw body, JSON parsing with clear errors, and
handing the reply to a delivery job exactly once."""

from __future__ import annotations

import logging
import uuid
from typing import Any, TypeVar

from fastapi import HTTPException, Request, status
from pydantic import BaseModel, SecretStr, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.api.deps import unavailable
from core.jobs import DispatchError, IdempotencyConflict, JobDispatcher, submit_job
from core.signing import SignatureError, verify
from core.storage.models import Job
from core.validation import error_details, strict_json_loads

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


async def read_signed_body(
    request: Request,
    *,
    secret: SecretStr | None,
    header_prefix: str,
    tolerance_s: float,
    source: str,
) -> bytes:
    """The raw body, after checking `{prefix}-Timestamp`/`{prefix}-Signature` when `secret` is set.

    A bad signature is a 401 whose message says what was wrong; the log line has the same
    reason and never the secret or the signature.
    """
    body = await request.body()
    if secret is None:
        return body
    try:
        verify(
            secret.get_secret_value(),
            request.headers.get(f"{header_prefix}-Timestamp"),
            body,
            request.headers.get(f"{header_prefix}-Signature"),
            tolerance_s,
        )
    except SignatureError as exc:
        client = request.client.host if request.client else None
        log.warning(
            "rejected %s webhook from %s: %s", source, client, exc, extra={"source": source}
        )
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, f"{source} webhook rejected: {exc}"
        ) from None
    return body


def parse_json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or a 422 that says why it is not one."""
    try:
        data = strict_json_loads(body)
    except ValueError as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"request body is not valid JSON: {exc}"
        ) from None
    if not isinstance(data, dict):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"request body must be a JSON object, not {type(data).__name__}",
        )
    return data


def validate_body(model: type[M], data: dict[str, Any]) -> M:
    """`model` from the body, or a 422 listing each problem the way FastAPI does."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise HTTPException(422, error_details(exc.errors(), prefix=["body"])) from None


def submit_delivery(
    factory: sessionmaker[Session],
    dispatcher: JobDispatcher,
    kind: str,
    params: dict[str, Any],
    idempotency_key: str,
) -> tuple[uuid.UUID, bool]:
    """Queue a delivery job once per key; returns `(job id, created)`.

    A redelivered webhook maps to the same key, so it finds the first job instead of sending
    again. When the bot's answer to the redelivery differs from the first one (a new model was
    promoted in between), the first answer stands: it is the one the customer gets.
    """
    try:
        job, created = submit_job(
            factory, dispatcher, kind, params, idempotency_key=idempotency_key
        )
    except IdempotencyConflict:
        with factory() as session:
            existing = session.scalars(
                select(Job.id).where(Job.idempotency_key == idempotency_key)
            ).one()
        log.info(
            "redelivered message got a different reply; keeping the first one",
            extra={"job_id": str(existing), "kind": kind},
        )
        return existing, False
    except DispatchError as exc:
        raise unavailable(
            f"the reply could not be queued for delivery ({exc}); try again later", 5
        ) from None
    return job.id, created
