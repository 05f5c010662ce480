"""Alert routes: list, drill down to the articles, acknowledge, and a live feed (SSE)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import HTTPException, Query, Request, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from apps.sentiment.api.articles import WITH_DETAILS, ArticleOut, article_out
from apps.sentiment.api.deps import ServiceDep
from apps.sentiment.models import OPEN_STATES, Alert, AlertState, Article, ArticleEntity, Entity
from core.api.deps import CurrentKey, Offset, SessionDep, scoped_router
from core.storage.base import utcnow
from core.storage.models import Scope

router = scoped_router(Scope.SENTIMENT, "sentiment: alerts")

HEARTBEAT_S = 15.0


class AlertOut(BaseModel):
    id: uuid.UUID
    state: AlertState
    ticker: str
    entity: str
    rule: str
    kind: str
    value: float
    threshold: float
    window_start: dt.datetime
    window_end: dt.datetime
    started_at: dt.datetime
    fired_at: dt.datetime | None
    resolved_at: dt.datetime | None
    acknowledged_at: dt.datetime | None
    acknowledged_by: str | None
    details: dict[str, Any]
    updated_at: dt.datetime


def alert_out(alert: Alert) -> AlertOut:
    return AlertOut(
        id=alert.id,
        state=alert.state,
        ticker=alert.entity.ticker,
        entity=alert.entity.name,
        rule=alert.rule.name,
        kind=alert.rule.kind.value,
        value=alert.value,
        threshold=alert.threshold,
        window_start=alert.window_start,
        window_end=alert.window_end,
        started_at=alert.started_at,
        fired_at=alert.fired_at,
        resolved_at=alert.resolved_at,
        acknowledged_at=alert.acknowledged_at,
        acknowledged_by=alert.acknowledged_by,
        details=alert.details or {},
        updated_at=alert.updated_at,
    )


def _with_relations() -> Any:
    return (selectinload(Alert.entity), selectinload(Alert.rule))


@router.get("/alerts", response_model=list[AlertOut])
def list_alerts(
    session: SessionDep,
    state: Annotated[
        str | None, Query(description="pending, firing, resolved, or open (pending + firing)")
    ] = None,
    ticker: Annotated[str | None, Query(max_length=16)] = None,
    unacknowledged: Annotated[bool, Query(description="Only alerts nobody acknowledged")] = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> list[AlertOut]:
    """Alerts, most recently changed first."""
    query = select(Alert).options(*_with_relations())
    if state == "open":
        query = query.where(Alert.state.in_(OPEN_STATES))
    elif state is not None:
        try:
            query = query.where(Alert.state == AlertState(state))
        except ValueError:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                "state must be pending, firing, resolved or open",
            ) from None
    if ticker is not None:  # as the articles' filter: an unknown ticker is a 404, not []
        entity_id = session.scalar(
            select(Entity.id).where(Entity.ticker == ticker.upper().removeprefix("$"))
        )
        if entity_id is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"{ticker} is not on the watchlist")
        query = query.where(Alert.entity_id == entity_id)
    if unacknowledged:
        query = query.where(Alert.acknowledged_at.is_(None))
    query = query.order_by(Alert.updated_at.desc(), Alert.id).limit(limit).offset(offset)
    return [alert_out(alert) for alert in session.scalars(query)]


@router.get(
    "/alerts/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def alert_stream(request: Request, service: ServiceDep) -> StreamingResponse:
    """Server-sent events: `event: alert` with the alert as JSON whenever one changes."""
    feed = service.alert_feed
    if feed is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the alert feed is not running")

    async def events() -> AsyncIterator[str]:
        with feed.subscribe() as queue:
            yield "retry: 2000\n\n"
            while not await request.is_disconnected():
                try:
                    alert = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
                except TimeoutError:
                    yield ": heartbeat\n\n"
                    continue
                yield f"event: alert\nid: {alert['id']}\ndata: {json.dumps(alert)}\n\n"

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _found(session: Session, alert_id: uuid.UUID) -> Alert:
    alert = session.get(Alert, alert_id, options=_with_relations())
    if alert is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no alert {alert_id}")
    return alert


class AlertDetail(AlertOut):
    articles: list[ArticleOut] = Field(description="The entity's articles in the alert's window")


@router.get("/alerts/{alert_id}", response_model=AlertDetail)
def get_alert(alert_id: uuid.UUID, session: SessionDep) -> AlertDetail:
    """One alert with the articles behind it (the window it was measured on), newest first."""
    alert = _found(session, alert_id)
    articles = session.scalars(
        select(Article)
        .join(ArticleEntity, ArticleEntity.article_id == Article.id)
        .where(
            ArticleEntity.entity_id == alert.entity_id,
            ArticleEntity.published_at > alert.window_start,
            ArticleEntity.published_at <= alert.window_end,
        )
        .options(*WITH_DETAILS)
        .order_by(Article.published_at.desc())
        .limit(500)
    )
    return AlertDetail(**alert_out(alert).model_dump(), articles=[article_out(a) for a in articles])


@router.post("/alerts/{alert_id}/ack", response_model=AlertOut)
def acknowledge(alert_id: uuid.UUID, session: SessionDep, key: CurrentKey) -> AlertOut:
    """Acknowledge an alert (idempotent: the first acknowledgement stands)."""
    alert = _found(session, alert_id)
    if alert.acknowledged_at is None:
        alert.acknowledged_at, alert.acknowledged_by = utcnow(), key.name
        session.commit()
    return alert_out(_found(session, alert_id))
