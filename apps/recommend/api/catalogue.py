"""Catalogue routes: add, update, read and retire items, one at a time or in bulk."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Header, HTTPException, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from apps.recommend.api.deps import FILE_BODY, ServiceDep, bad_lines
from apps.recommend.catalogue import (
    MAX_BATCH,
    ItemIn,
    UntitledNewItems,
    UpsertReport,
    store_items,
)
from apps.recommend.imports import ImportFileError, detect_format, import_item_file
from apps.recommend.models import Item
from apps.recommend.training import TRAIN_JOB, RecommendTrainParams
from core.api.deps import (
    DispatcherDep,
    Offset,
    RawBody,
    SessionDep,
    SessionFactoryDep,
    scoped_router,
)
from core.jobs import InvalidJobParams, submit_job
from core.storage.models import Scope
from core.validation import one_or_batch

router = scoped_router(Scope.RECOMMEND, "recommend: catalogue")


class ItemBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[ItemIn] = Field(min_length=1, max_length=MAX_BATCH)


class UpsertReply(BaseModel):
    created: int
    updated: int
    unchanged: int
    to_embed: int = Field(description="Items whose text is new or changed.")
    embedding_job_id: str | None = Field(description="The job embedding them (GET /v1/jobs/…).")


class ItemPublic(BaseModel):
    id: str = Field(description="The backend's own id for the item.")
    title: str
    description: str | None
    tags: list[str]
    category: str | None
    series: str | None
    metadata: dict[str, Any]
    active: bool


def _public(item: Item) -> ItemPublic:
    return ItemPublic(
        id=item.external_id,
        title=item.title,
        description=item.description,
        tags=item.tags,
        category=item.category,
        series=item.series,
        metadata=item.attributes,
        active=item.active,
    )


def _upsert(session: Any, service: Any, items: list[ItemIn]) -> UpsertReply:
    try:
        return _reply(service, store_items(session, items))
    except UntitledNewItems as exc:
        session.rollback()
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None


def _reply(service: Any, report: UpsertReport) -> UpsertReply:
    """The counts, and the job embedding new and changed text (started here)."""
    job = service.request_embedding() if report.to_embed else None
    return UpsertReply(
        created=report.created,
        updated=report.updated,
        unchanged=report.unchanged,
        to_embed=len(report.to_embed),
        embedding_job_id=job,
    )


ItemBody = one_or_batch(ItemIn, ItemBatch, "items")


@router.post("/items", response_model=UpsertReply, summary="Add or update items")
def post_items(body: ItemBody, session: SessionDep, service: ServiceDep) -> Any:
    """One item, or `{"items": [...]}` (up to 5,000). Items are keyed by `id`:
    sending one again updates it. New or changed text is embedded by a background job, after
    which the item is recommendable."""
    return _upsert(session, service, body.items if isinstance(body, ItemBatch) else [body])


@router.post(
    "/items/import",
    response_model=UpsertReply,
    summary="Import items from a JSONL or CSV file",
    openapi_extra=FILE_BODY,
    responses={422: {"description": "Bad lines, each with its number; nothing imported"}},
)
def import_items(
    body: RawBody,
    service: ServiceDep,
    content_type: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Any:
    """The body is the file. CSV: `id,title,description,tags,category,series,active` with `|`
    between tags; other columns become metadata. The whole file is read before
    anything is stored, then stored a chunk per transaction (`import_item_file`)."""
    try:
        report = import_item_file(
            service.factory,
            body,
            size=service.recommend.import_chunk,
            file_format=detect_format(None, content_type, body),
        )
    except ImportFileError as exc:  # an upload cannot change between the passes: none stored
        raise bad_lines(exc) from None
    return _reply(service, report)


@router.get("/items", response_model=list[ItemPublic], summary="List items")
def list_items(
    session: SessionDep,
    category: Annotated[str | None, Query(max_length=200)] = None,
    active: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> Any:
    query = select(Item)
    if category is not None:
        query = query.where(Item.category == category)
    if active is not None:
        query = query.where(Item.active == active)
    query = query.order_by(Item.external_id).limit(limit).offset(offset)
    return [_public(item) for item in session.scalars(query)]


def _get(session: Any, item_id: str) -> Item:
    item = session.scalar(select(Item).where(Item.external_id == item_id))
    if item is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no item {item_id!r}")
    return item


@router.get("/items/{item_id:path}", response_model=ItemPublic, summary="One item")
def get_item(item_id: str, session: SessionDep) -> Any:
    return _public(_get(session, item_id))


@router.delete(
    "/items/{item_id:path}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Retire an item (it stays for past events, and is never recommended again)",
)
def retire_item(item_id: str, session: SessionDep) -> Response:
    item = _get(session, item_id)
    item.active = False
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/embed", summary="Embed new and changed items now (normally automatic)")
def start_embedding(service: ServiceDep) -> dict[str, str | None]:
    return {"embedding_job_id": service.request_embedding()}


@router.post(
    "/train",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Tune the item encoder on behaviour (a job on the gpu queue)",
)
def start_training(
    body: RecommendTrainParams, factory: SessionFactoryDep, dispatcher: DispatcherDep
) -> dict[str, str]:
    """Items the same users engage with become training pairs; the new encoder version is
    promoted when not worse, then the catalogue is embedded with it. Follow `GET /v1/jobs/{id}`."""
    try:
        job, _ = submit_job(factory, dispatcher, TRAIN_JOB, body.model_dump(mode="json"))
    except InvalidJobParams as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    return {"job_id": str(job.id)}
