"""RSS/Atom feed routes: the feeds to poll, and polling one now (`sentiment` scope)."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

from fastapi import HTTPException, Response, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from apps.sentiment.api.deps import ServiceDep
from apps.sentiment.articles import StorableUrl
from apps.sentiment.feeds import PollResult, poll_feed
from apps.sentiment.models import Feed
from apps.sentiment.scoring import NoSentimentModel
from core.api.deps import (
    SessionDep,
    SessionFactoryDep,
    commit_or_conflict,
    scoped_router,
    unavailable,
)
from core.storage.models import Scope

router = scoped_router(Scope.SENTIMENT, "sentiment: feeds")


class FeedIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: StorableUrl
    name: str | None = Field(
        default=None, max_length=200, description="Source name of its articles"
    )


class FeedOut(BaseModel):
    id: uuid.UUID
    url: str
    name: str | None
    last_polled_at: dt.datetime | None
    last_status: int | None
    last_error: str | None


def feed_out(feed: Feed) -> FeedOut:
    return FeedOut(
        id=feed.id,
        url=feed.url,
        name=feed.name,
        last_polled_at=feed.last_polled_at,
        last_status=feed.last_status,
        last_error=feed.last_error,
    )


@router.get("/feeds", response_model=list[FeedOut])
def list_feeds(session: SessionDep) -> list[FeedOut]:
    return [feed_out(f) for f in session.scalars(select(Feed).order_by(Feed.url))]


@router.post("/feeds", response_model=FeedOut, status_code=status.HTTP_201_CREATED)
def add_feed(entry: FeedIn, session: SessionDep) -> FeedOut:
    """Add a feed; `textsuite sentiment poll` fetches it (or `POST .../feeds/{id}/poll`)."""
    feed = Feed(url=str(entry.url), name=entry.name)
    session.add(feed)
    commit_or_conflict(session, f"{entry.url} is already polled")
    return feed_out(feed)


@router.delete("/feeds/{feed_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_feed(feed_id: uuid.UUID, session: SessionDep) -> Response:
    feed = session.get(Feed, feed_id)
    if feed is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no feed {feed_id}")
    session.delete(feed)
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


class PollOut(BaseModel):
    status: int | None
    entries: int
    ingested: int
    error: str | None


@router.post("/feeds/{feed_id}/poll", response_model=PollOut)
async def poll_now(feed_id: uuid.UUID, factory: SessionFactoryDep, service: ServiceDep) -> PollOut:
    """Fetch the feed now (conditional GET) and ingest its new entries."""
    try:
        result: PollResult = await asyncio.to_thread(
            poll_feed, factory, feed_id, service.ingest_feed_entries
        )
    except LookupError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no feed {feed_id}") from None
    except NoSentimentModel as exc:
        raise unavailable(str(exc), 60) from None
    return PollOut(
        status=result.status, entries=result.entries, ingested=result.ingested, error=result.error
    )
