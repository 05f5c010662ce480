"""Recommendation routes: for a user, similar to an item, and a free-text query."""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated, Any

from fastapi import HTTPException, Path, Query, status
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from apps.recommend.api.deps import ServiceDep
from apps.recommend.events import UserId
from apps.recommend.recommending import (
    Filters,
    ItemNotEmbedded,
    RecommendationList,
    UnknownItem,
    recommend_for_user,
    search_items,
    similar_items,
)
from apps.recommend.service import NoEncoder
from core.api.deps import SessionFactoryDep, scoped_router, unavailable
from core.storage.models import Scope

router = scoped_router(Scope.RECOMMEND, "recommend: lists")

K = Annotated[int, Query(ge=1, le=100, description="How many items")]
Category = Annotated[str | None, Query(max_length=200, description="Only this category")]
MAX_EXCLUDED = 100
ItemRef = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Exclude = Annotated[
    list[ItemRef] | None,
    Query(
        max_length=MAX_EXCLUDED,
        description="Item ids to leave out, e.g. what the page shows or the cart holds (repeat "
        "the parameter; ids the catalogue does not hold are ignored)",
    ),
]


class RecommendedItem(BaseModel):
    item_id: str = Field(description="The item's external id.")
    title: str
    category: str | None
    score: float
    reason: str = Field(description="Why it is here, for the user to read.")


class RecommendationReply(BaseModel):
    recommendation_id: uuid.UUID = Field(
        description="Send it with events on these items (feedback)."
    )
    strategy: str = Field(description="personal, popular, similar or query")
    items: list[RecommendedItem]


def _reply(found: RecommendationList) -> RecommendationReply:
    return RecommendationReply(
        recommendation_id=found.id,
        strategy=found.strategy,
        items=[
            RecommendedItem(
                item_id=r.facts.external_id,
                title=r.facts.title,
                category=r.facts.category,
                score=round(r.score, 6),
                reason=r.reason,
            )
            for r in found.items
        ],
    )


@router.get(
    "/users/{user_id:path}",
    response_model=RecommendationReply,
    summary="Recommended for a user",
)
def for_user(
    user_id: Annotated[UserId, Path()],
    factory: SessionFactoryDep,
    service: ServiceDep,
    k: K = 10,
    category: Category = None,
    exclude_seen: Annotated[bool, Query(description="Leave out items the user had")] = True,
    exclude: Exclude = None,
) -> Any:
    """From the user's recent events (recency- and type-weighted): items other users engaged
    with alongside them, and items whose text is close. A user with no events gets what is
    popular right now (`strategy: popular`)."""
    # The session is opened here, not by a dependency: on the hot path each dependency that
    # FastAPI runs in its thread pool adds a hop, and this handler runs there anyway.
    with factory() as session:
        found = recommend_for_user(
            service.state,
            session,
            user_id,
            k,
            Filters(category, exclude_seen, frozenset(exclude or ())),
            service.recommend,
        )
    return _reply(found)


@router.get(
    "/items/{item_id:path}/similar",
    response_model=RecommendationReply,
    summary="Items similar to an item",
    responses={404: {"description": "Unknown item"}, 409: {"description": "Not embedded yet"}},
)
def similar(
    item_id: str,
    factory: SessionFactoryDep,
    service: ServiceDep,
    k: K = 10,
    category: Category = None,
    exclude: Exclude = None,
) -> Any:
    filters = Filters(category, exclude=frozenset(exclude or ()))
    try:
        with factory() as session:
            found = similar_items(service.state, session, item_id, k, filters, service.recommend)
    except UnknownItem as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except ItemNotEmbedded as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    return _reply(found)


class QueryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
    k: int = Field(default=10, ge=1, le=100)
    category: str | None = Field(default=None, max_length=200)
    user_id: UserId | None = Field(default=None, description="Who asked (for feedback).")
    exclude: list[ItemRef] = Field(
        default_factory=list, max_length=MAX_EXCLUDED, description="Item ids to leave out"
    )


@router.post(
    "/query",
    response_model=RecommendationReply,
    summary="Find items like a free-text description",
    responses={503: {"description": "Nothing is embedded yet"}},
)
async def query(body: QueryIn, factory: SessionFactoryDep, service: ServiceDep) -> Any:
    try:
        vector = await service.query_vector(body.text)
    except NoEncoder as exc:
        raise unavailable(str(exc), 30) from None

    def search() -> RecommendationList:
        with factory() as session:
            return search_items(
                service.state,
                session,
                body.text,
                vector,
                body.k,
                Filters(body.category, exclude_seen=False, exclude=frozenset(body.exclude)),
                service.recommend,
                body.user_id,
            )

    return _reply(await asyncio.to_thread(search))
