"""Watchlist routes: the companies the monitor tracks (`sentiment` scope)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from fastapi import HTTPException, Query, Response, status
from pydantic import BaseModel
from sqlalchemy import func, select

from apps.sentiment.api.deps import PurgeQuery, keep_alerts
from apps.sentiment.entities import (
    RELINK_HISTORY,
    EntityConflict,
    EntityIn,
    add_entity,
    entity_by_ticker,
    link_recent_articles,
    unlink_unmentioned,
)
from apps.sentiment.models import Alert, Article, ArticleEntity, Entity
from core.api.deps import SessionDep, check_time_bounds, scoped_router
from core.storage.base import utcnow
from core.storage.models import Scope

MAX_BUCKETS = 5000

router = scoped_router(Scope.SENTIMENT, "sentiment: watchlist")


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
    """Add a company to the watchlist; it is linked to the articles of the past week that
    mention it, and to every article ingested from now on."""
    try:
        entity = add_entity(session, entry)
    except EntityConflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    link_recent_articles(session, entity, utcnow() - RELINK_HISTORY)
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
    since = utcnow() - RELINK_HISTORY
    link_recent_articles(session, entity, since)  # new aliases, new links
    unlink_unmentioned(session, entity, since)  # an alias taken away, its links with it
    session.commit()
    return entity_out(entity)


@router.delete(
    "/entities/{ticker}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={409: {"description": "the company has alerts; purge=true deletes them too"}},
)
def delete_entity(
    ticker: str,
    session: SessionDep,
    purge: PurgeQuery = False,
) -> Response:
    """Remove a company and its article links (the articles stay). A company with alerts is
    refused (409) unless `purge=true`: its alerts are the team's record of what happened;
    `active: false` stops tracking it and keeps them."""
    entity = _found(session, ticker)
    # Locked until the delete commits: an alert being opened for it meanwhile waits (its
    # foreign key takes a share lock), so none is deleted without having been counted.
    session.scalar(select(Entity.id).where(Entity.id == entity.id).with_for_update())
    alerts = session.scalar(select(func.count(Alert.id)).where(Alert.entity_id == entity.id))
    keep_alerts(entity.ticker, alerts or 0, purge, instead="set active: false (PUT)")
    session.delete(entity)
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


class Bucket(BaseModel):
    start: dt.datetime
    volume: int
    mean_score: float | None
    negative: int
    neutral: int
    positive: int


class Series(BaseModel):
    ticker: str
    bucket_s: int
    since: dt.datetime
    until: dt.datetime
    buckets: list[Bucket]


@router.get("/entities/{ticker}/series", response_model=Series)
def entity_series(
    ticker: str,
    session: SessionDep,
    bucket_s: Annotated[int, Query(ge=60, le=7 * 86_400, description="Bucket length")] = 3600,
    since: Annotated[dt.datetime | None, Query(description="Default: `until` - 7 days")] = None,
    until: Annotated[
        dt.datetime | None, Query(description="Default: the entity's newest article")
    ] = None,
) -> Series:
    """Volume, mean score and label counts per time bucket: the dashboard's charts."""
    check_time_bounds(since, until)
    entity = _found(session, ticker)
    if until is None:
        newest = session.scalar(
            select(func.max(ArticleEntity.published_at)).where(ArticleEntity.entity_id == entity.id)
        )
        until = _aware(newest) + dt.timedelta(seconds=1) if newest else utcnow()
    since = since or until - dt.timedelta(days=7)
    if since >= until:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "since must be before until")
    if (until - since).total_seconds() / bucket_s > MAX_BUCKETS:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"more than {MAX_BUCKETS} buckets: widen bucket_s or narrow since/until",
        )
    rows = session.execute(
        select(ArticleEntity.published_at, Article.score, Article.label)
        .join(Article, Article.id == ArticleEntity.article_id)
        .where(
            ArticleEntity.entity_id == entity.id,
            ArticleEntity.published_at >= since,
            ArticleEntity.published_at < until,
            Article.score.is_not(None),
        )
    ).all()
    origin = since.timestamp() // bucket_s * bucket_s  # buckets aligned to the epoch
    sums: dict[int, list[float]] = {}
    counts: dict[int, dict[str, int]] = {}
    for published_at, score, label in rows:
        index = int((published_at.timestamp() - origin) // bucket_s)
        sums.setdefault(index, []).append(score)
        counts.setdefault(index, {"negative": 0, "neutral": 0, "positive": 0})[label] += 1
    buckets = [
        Bucket(
            start=dt.datetime.fromtimestamp(origin + index * bucket_s, dt.UTC),
            volume=len(sums.get(index, [])),
            mean_score=round(sum(sums[index]) / len(sums[index]), 4) if index in sums else None,
            **counts.get(index, {"negative": 0, "neutral": 0, "positive": 0}),
        )
        for index in range(int((until.timestamp() - origin) // bucket_s) + 1)
    ]
    return Series(
        ticker=entity.ticker, bucket_s=bucket_s, since=since, until=until, buckets=buckets
    )


def _aware(value: dt.datetime) -> dt.datetime:
    # max() over the column comes back without the column type on SQLite: naive UTC.
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
