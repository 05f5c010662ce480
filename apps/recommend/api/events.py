"""Event routes: what users did with items (views, clicks, carts, purchases, ratings)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Header, HTTPException, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from apps.recommend.api.deps import FILE_BODY, ServiceDep, bad_lines
from apps.recommend.events import (
    MAX_BATCH,
    EventIn,
    EventRejected,
    RatingScale,
    record_events,
)
from apps.recommend.imports import ImportFileError, detect_format, import_event_file
from core.api.deps import RawBody, SessionDep, scoped_router
from core.storage.models import Scope
from core.validation import one_or_batch

router = scoped_router(Scope.RECOMMEND, "recommend: events")


class EventBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[EventIn] = Field(min_length=1, max_length=MAX_BATCH)


class EventReply(BaseModel):
    stored: int
    duplicates: int = Field(description="Events already stored (same event id): not counted again.")


def _record(session: Session, events: list[EventIn], ratings: RatingScale) -> EventReply:
    """Store and commit; `EventRejected` (after a rollback) when any event is refused."""
    for attempt in range(2):
        try:
            report = record_events(session, events, ratings)
            session.commit()
            return EventReply(stored=report.stored, duplicates=report.duplicates)
        except EventRejected:
            session.rollback()
            raise
        except IntegrityError:  # the same event delivered concurrently: count it once
            session.rollback()
            if attempt:
                raise
    raise AssertionError("unreachable")


EventBody = one_or_batch(EventIn, EventBatch, "events")


@router.post(
    "/events",
    response_model=EventReply,
    summary="Record user events",
    responses={422: {"description": "Unknown items or recommendation ids; nothing stored"}},
)
def post_events(body: EventBody, session: SessionDep, service: ServiceDep) -> Any:
    """One event, or `{"events": [...]}` (up to 10,000). Idempotent by `event_id`. Send the
    `recommendation_id` of the list an event came from, so feedback can be measured."""
    try:
        events = body.events if isinstance(body, EventBatch) else [body]
        return _record(session, events, service.recommend.ratings())
    except EventRejected as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            {
                "message": str(exc),
                "errors": [{"event": i, "error": why} for i, why in exc.problems.items()],
            },
        ) from None


@router.post(
    "/events/import",
    response_model=EventReply,
    summary="Import events from a JSONL or CSV file",
    openapi_extra=FILE_BODY,
    responses={
        422: {
            "description": "Bad lines or unknown items; nothing imported (an event_id reused "
            "for another event further on is found only when its chunk is stored: the message "
            "says how many events before it were stored)"
        }
    },
)
def import_events(
    body: RawBody,
    service: ServiceDep,
    content_type: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Any:
    """CSV: `event_id,user_id,item_id,type,value,timestamp,recommendation_id`. Refused events
    are named by their line in the file. The whole file is checked before anything is stored,
    then stored a chunk per transaction (`import_event_file`)."""
    file_format = detect_format(None, content_type, body)
    try:
        report = import_event_file(
            service.factory,
            body,
            service.recommend.ratings(),
            size=service.recommend.import_chunk,
            file_format=file_format,
        )
    except ImportFileError as exc:
        raise bad_lines(exc) from None
    return EventReply(stored=report.stored, duplicates=report.duplicates)
