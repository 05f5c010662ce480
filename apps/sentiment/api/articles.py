"""Article routes: ingest over HTTP and read scored articles (`sentiment` scope)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal

import redis
from fastapi import HTTPException, Query, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

from apps.sentiment.api.deps import ServiceDep
from apps.sentiment.articles import MAX_BATCH, ArticleIn, set_correction
from apps.sentiment.models import Article, ArticleEntity, Entity, LabelCorrection
from apps.sentiment.scoring import LABELS, NoSentimentModel
from apps.sentiment.service import NotDurable
from apps.sentiment.stream import StreamFull
from core.api.deps import (
    CurrentKey,
    Offset,
    SessionDep,
    check_period,
    scoped_router,
    unavailable,
)
from core.storage.models import Scope
from core.validation import one_or_batch

router = scoped_router(Scope.SENTIMENT, "sentiment: articles")


class ArticleBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    articles: list[ArticleIn] = Field(min_length=1, max_length=MAX_BATCH)


class IngestedOut(BaseModel):
    id: uuid.UUID
    duplicate: bool = Field(description="Already stored (same id, URL or text): not rescored.")
    label: str | None
    score: float | None = Field(description="P(positive) - P(negative)")


class IngestReply(BaseModel):
    articles: list[IngestedOut]


class QueuedReply(BaseModel):
    queued: int
    stream_ids: list[str]
    durability: str = Field(
        description="What of the queue survives a Redis restart: `aof-always` (all of it),"
        " `aof-everysec` (all but the last second on a machine crash), `snapshots` (the last"
        " snapshot), `none` (nothing not yet scored), `unknown`."
    )


ArticleBody = one_or_batch(ArticleIn, ArticleBatch, "articles")


@router.post(
    "/articles",
    response_model=IngestReply | QueuedReply,
    responses={
        202: {"model": QueuedReply, "description": "Queued on the ingest stream"},
        503: {
            "description": "No sentiment model yet; the stream is unreachable, too far behind"
            " or not durable enough (`TEXTSUITE_SENTIMENT_STREAM_REQUIRE_DURABLE`)"
        },
    },
)
async def post_articles(body: ArticleBody, service: ServiceDep) -> IngestReply | JSONResponse:
    """Ingest one article or `{"articles": [...]}` (up to 1,000).

    With a stream configured (`TEXTSUITE_SENTIMENT_STREAM_URL`) the articles are queued for the
    scoring workers (202); otherwise they are stored and scored before the reply (200). Either
    way an article already seen (same source id, URL or text) is stored and scored once.
    """
    items = body.articles if isinstance(body, ArticleBatch) else [body]
    if service.stream_client is not None:
        try:
            queued = await service.publish(items)
        except redis.RedisError as exc:
            raise unavailable(
                f"the ingest stream is unreachable ({exc}); nothing was queued, retry later", 5
            ) from None
        except StreamFull as exc:
            raise unavailable(f"{exc}, retry later", 10) from None
        except NotDurable as exc:
            raise unavailable(str(exc), 60) from None
        reply = QueuedReply(
            queued=len(queued.stream_ids),
            stream_ids=queued.stream_ids,
            durability=queued.durability,
        )
        return JSONResponse(reply.model_dump(), status_code=status.HTTP_202_ACCEPTED)
    try:
        results = await service.ingest_now(items)
    except NoSentimentModel as exc:
        raise unavailable(f"{exc}; nothing was stored", 60) from None
    return IngestReply(
        articles=[
            IngestedOut(id=r.article_id, duplicate=r.duplicate, label=r.label, score=r.score)
            for r in results
        ]
    )


class ArticleOut(BaseModel):
    id: uuid.UUID
    source: str
    external_id: str | None
    url: str | None
    title: str
    body: str | None
    published_at: dt.datetime
    received_at: dt.datetime
    label: str | None
    probabilities: dict[str, float] | None
    score: float | None
    model_version_id: uuid.UUID | None
    tickers: list[str]
    analyst_label: str | None = Field(
        description="An analyst's correction of the model's label, learnt by the next training"
    )


def article_out(article: Article) -> ArticleOut:
    return ArticleOut(
        id=article.id,
        source=article.source,
        external_id=article.external_id,
        url=article.url,
        title=article.title,
        body=article.body,
        published_at=article.published_at,
        received_at=article.received_at,
        label=article.label,
        probabilities=article.probabilities,
        score=article.score,
        model_version_id=article.model_version_id,
        tickers=sorted(entity.ticker for entity in article.entities),
        analyst_label=article.correction.label if article.correction else None,
    )


# What an article read returns with it (its entities and an analyst's correction).
WITH_DETAILS = (selectinload(Article.entities), selectinload(Article.correction))


@router.get("/articles", response_model=list[ArticleOut])
def list_articles(
    session: SessionDep,
    ticker: Annotated[str | None, Query(max_length=16, description="Only this entity")] = None,
    since: Annotated[dt.datetime | None, Query(description="Published at or after")] = None,
    until: Annotated[dt.datetime | None, Query(description="Published before")] = None,
    label: Annotated[
        str | None, Query(description="The model's label: negative, neutral or positive")
    ] = None,
    analyst_label: Annotated[
        str | None, Query(description="Only articles an analyst labelled so (corrections)")
    ] = None,
    corrected: Annotated[
        bool | None, Query(description="Only articles an analyst relabelled (or only others)")
    ] = None,
    external_id: Annotated[
        str | None, Query(max_length=300, description="The source's own id (`id` when posted)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> list[ArticleOut]:
    """Scored articles, newest first."""
    query = select(Article).options(*WITH_DETAILS)
    if ticker is not None:
        entity_id = session.scalar(
            select(Entity.id).where(Entity.ticker == ticker.upper().removeprefix("$"))
        )
        if entity_id is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"{ticker} is not on the watchlist")
        query = query.join(ArticleEntity, ArticleEntity.article_id == Article.id).where(
            ArticleEntity.entity_id == entity_id
        )
    check_period(since, until)
    if external_id is not None:
        query = query.where(Article.external_id == external_id)
    if since is not None:
        query = query.where(Article.published_at >= since)
    if until is not None:
        query = query.where(Article.published_at < until)
    for name, value in (("label", label), ("analyst_label", analyst_label)):
        if value is not None and value not in LABELS:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT, f"{name} must be one of {', '.join(LABELS)}"
            )
    if label is not None:
        query = query.where(Article.label == label)
    if analyst_label is not None:
        query = query.where(
            Article.id.in_(
                select(LabelCorrection.article_id).where(LabelCorrection.label == analyst_label)
            )
        )
    if corrected is not None:
        relabelled = select(LabelCorrection.article_id)
        query = query.where(
            Article.id.in_(relabelled) if corrected else Article.id.not_in(relabelled)
        )
    query = query.order_by(Article.published_at.desc(), Article.id).limit(limit).offset(offset)
    return [article_out(article) for article in session.scalars(query)]


@router.get("/articles/{article_id}", response_model=ArticleOut)
def get_article(article_id: uuid.UUID, session: SessionDep) -> Any:
    article = session.get(Article, article_id, options=WITH_DETAILS)
    if article is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no article {article_id}")
    return article_out(article)


class Relabel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: Literal["negative", "neutral", "positive"]


@router.put("/articles/{article_id}/label", response_model=ArticleOut)
def relabel_article(
    article_id: uuid.UUID, body: Relabel, session: SessionDep, key: CurrentKey
) -> ArticleOut:
    """An analyst's label for an article the model read wrong. The model's label and score,
    and the alerts they raised, stay as they were; the next training run (`textsuite train
    sentiment`, or the schedule) learns the correction."""
    missing = HTTPException(status.HTTP_404_NOT_FOUND, f"no article {article_id}")
    if session.get(Article, article_id) is None:
        raise missing
    try:
        set_correction(session, article_id, body.label, key.name)
        session.commit()
    except IntegrityError:  # the article was deleted meanwhile
        session.rollback()
        raise missing from None
    article = session.get(Article, article_id, options=WITH_DETAILS, populate_existing=True)
    if article is None:
        raise missing
    return article_out(article)


@router.delete("/articles/{article_id}/label", status_code=status.HTTP_204_NO_CONTENT)
def remove_relabel(article_id: uuid.UUID, session: SessionDep) -> None:
    """Withdraw an analyst's correction (the next training run no longer learns it)."""
    removed = session.execute(
        delete(LabelCorrection).where(LabelCorrection.article_id == article_id)
    ).rowcount  # type: ignore[attr-defined]
    if not removed:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"article {article_id} has no correction")
    session.commit()
