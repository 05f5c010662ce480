"""Stream messages the consumers gave up on (dead letters): list them, ingest one again once
what failed is fixed, or discard it (`sentiment` scope)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

from fastapi import HTTPException, Query, Response, status
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from apps.sentiment.api.articles import IngestedOut
from apps.sentiment.api.deps import ServiceDep
from apps.sentiment.models import DeadLetter
from apps.sentiment.scoring import NoSentimentModel
from apps.sentiment.stream import article_of
from core.api.deps import Offset, SessionDep, scoped_router, unavailable
from core.storage.models import Scope

router = scoped_router(Scope.SENTIMENT, "sentiment: stream")


class DeadLetterOut(BaseModel):
    id: uuid.UUID
    stream: str
    message_id: str
    payload: dict[str, Any]
    error: str
    deliveries: int
    created_at: dt.datetime


def _found(session: Session, letter_id: uuid.UUID) -> DeadLetter:
    letter = session.get(DeadLetter, letter_id)
    if letter is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no dead letter {letter_id}")
    return letter


@router.get("/dead-letters", response_model=list[DeadLetterOut])
def list_dead_letters(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Offset = 0,
) -> list[DeadLetterOut]:
    """Newest first: each message as it was published, why it failed, and how often."""
    query = select(DeadLetter).order_by(DeadLetter.created_at.desc(), DeadLetter.id)
    letters = session.scalars(query.limit(limit).offset(offset))
    return [DeadLetterOut.model_validate(letter, from_attributes=True) for letter in letters]


@router.post("/dead-letters/{letter_id}/retry", response_model=IngestedOut)
async def retry_dead_letter(
    letter_id: uuid.UUID, session: SessionDep, service: ServiceDep
) -> IngestedOut:
    """Ingest the message again, in this process (once what failed is fixed: a model trained,
    a database back); stored, the dead letter goes. A message that is no article stays, with a
    422 saying why (discard it with DELETE)."""
    letter = _found(session, letter_id)
    try:
        article = article_of(letter.payload)
    except ValueError as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"message {letter.message_id}: {exc}"
        ) from None
    try:
        [result] = await service.ingest_now([article])
    except NoSentimentModel as exc:
        raise unavailable(f"{exc}; the dead letter stays", 60) from None
    session.delete(letter)
    session.commit()
    return IngestedOut(
        id=result.article_id, duplicate=result.duplicate, label=result.label, score=result.score
    )


@router.delete("/dead-letters/{letter_id}", status_code=status.HTTP_204_NO_CONTENT)
def discard_dead_letter(letter_id: uuid.UUID, session: SessionDep) -> Response:
    session.delete(_found(session, letter_id))
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
