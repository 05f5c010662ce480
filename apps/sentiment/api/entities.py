"""Watchlist routes: the companies the monitor tracks (`sentiment` scope)."""

from __future__ import annotations

import datetime as dt
import uuid

from fastapi import APIRouter, Depends, HTTPException, Response, status
from pydantic import BaseModel
from sqlalchemy import select

from apps.sentiment.entities import EntityConflict, EntityIn, add_entity, entity_by_ticker
from apps.sentiment.models import Entity
from core.api.deps import SessionDep, require_scope
from core.storage.models import Scope

router = APIRouter(
    tags=["sentiment: watchlist"], dependencies=[Depends(require_scope(Scope.SENTIMENT))]
)


class EntityOut(BaseModel):
    id: uuid.UUID
    ticker: str
    name: str
    aliases: list[str]
    sector: str | None
    active: bool
    created_at: dt.datetime
    updated_at: dt.datetime


def entity_out(entity: Entity) -> EntityOut:
    return EntityOut(
        id=entity.id,
        ticker=entity.ticker,
        name=entity.name,
        aliases=list(entity.aliases),
        sector=entity.sector,
        active=entity.active,
        created_at=entity.created_at,
        updated_at=entity.updated_at,
    )


@router.get("/entities", response_model=list[EntityOut])
def list_entities(session: SessionDep) -> list[EntityOut]:
    return [entity_out(e) for e in session.scalars(select(Entity).order_by(Entity.ticker))]


@router.post("/entities", response_model=EntityOut, status_code=status.HTTP_201_CREATED)
def create_entity(entry: EntityIn, session: SessionDep) -> EntityOut:
    """Add a company to the watchlist; articles ingested from now on are linked to it."""
    try:
        entity = add_entity(session, entry)
    except EntityConflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    session.commit()
    return entity_out(entity)


def _found(session: SessionDep, ticker: str) -> Entity:
    entity = entity_by_ticker(session, ticker)
    if entity is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"{ticker} is not on the watchlist")
    return entity


@router.get("/entities/{ticker}", response_model=EntityOut)
def get_entity(ticker: str, session: SessionDep) -> EntityOut:
    return entity_out(_found(session, ticker))


@router.put("/entities/{ticker}", response_model=EntityOut)
def replace_entity(ticker: str, entry: EntityIn, session: SessionDep) -> EntityOut:
    """Replace a watchlist entry (name, aliases, sector, active); the ticker cannot change."""
    entity = _found(session, ticker)
    if entry.ticker != entity.ticker:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"the body's ticker {entry.ticker} differs from {entity.ticker} in the path; "
            "add the new ticker and delete the old one instead",
        )
    for key, value in entry.model_dump().items():
        setattr(entity, key, value)
    session.commit()
    return entity_out(entity)


@router.delete("/entities/{ticker}", status_code=status.HTTP_204_NO_CONTENT)
def delete_entity(ticker: str, session: SessionDep) -> Response:
    """Remove a company and its article links (the articles stay)."""
    session.delete(_found(session, ticker))
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
