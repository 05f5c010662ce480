"""`/v1/support/review`: the queue of unsure and handed-off messages, and labelling them."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

from fastapi import HTTPException, Query, status
from pydantic import BaseModel, ConfigDict, Field, model_validator

from apps.support import review
from apps.support.catalogue import CatalogueError, ExampleConflict, IntentNotFound
from apps.support.models import ReviewItem, ReviewStatus
from core.api.deps import CurrentKey, Offset, SessionDep, scoped_router
from core.storage.models import Scope

router = scoped_router(Scope.SUPPORT, "support: review", prefix="/review")


class ReviewItemPublic(BaseModel):
    id: uuid.UUID
    status: ReviewStatus
    reason: str
    message_id: uuid.UUID
    text: str
    predicted_intent: str | None
    confidence: float | None
    alternatives: list[dict[str, Any]]
    labelled_intent_id: uuid.UUID | None
    labelled_intent: str | None = Field(description="The intent a reviewer labelled it with")
    created_at: dt.datetime
    reviewed_at: dt.datetime | None

    @classmethod
    def of(cls, item: ReviewItem) -> ReviewItemPublic:
        return cls(
            id=item.id,
            status=item.status,
            reason=item.reason,
            message_id=item.message_id,
            text=item.message.text,
            predicted_intent=item.message.intent,
            confidence=item.message.confidence,
            alternatives=item.message.alternatives,
            labelled_intent_id=item.label_intent_id,
            labelled_intent=item.label_intent.name if item.label_intent else None,
            created_at=item.created_at,
            reviewed_at=item.reviewed_at,
        )


class ReviewDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    intent: str | None = Field(default=None, max_length=100, description="The right intent")
    dismiss: bool = Field(default=False, description="Nothing to learn from this message")

    @model_validator(mode="after")
    def _one_of(self) -> ReviewDecision:
        if (self.intent is None) == (not self.dismiss):
            raise ValueError("give either an intent to label the message with, or dismiss: true")
        return self


@router.get("", response_model=list[ReviewItemPublic], summary="Messages waiting for review")
def list_review(
    session: SessionDep,
    item_status: Annotated[ReviewStatus, Query(alias="status")] = ReviewStatus.PENDING,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Offset = 0,
) -> list[ReviewItemPublic]:
    """Messages waiting for review (or reviewed ones, by `status`), oldest first."""
    items = review.pending_items(session, item_status, limit, offset)
    return [ReviewItemPublic.of(item) for item in items]


@router.post(
    "/{item_id}",
    response_model=ReviewItemPublic,
    summary="Label a message with its intent (it becomes a training example) or dismiss it",
)
def decide_review(
    item_id: uuid.UUID, body: ReviewDecision, session: SessionDep, key: CurrentKey
) -> ReviewItemPublic:
    try:
        if body.dismiss:
            item = review.dismiss_item(session, item_id, key.name)
        else:
            assert body.intent is not None
            item = review.label_item(session, item_id, body.intent, key.name)
    except review.ReviewItemNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except ExampleConflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    except IntentNotFound as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    except CatalogueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    session.commit()
    return ReviewItemPublic.of(item)
