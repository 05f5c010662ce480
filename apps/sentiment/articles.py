"""Articles in: validation, normalised content hashes, and storing each article once.

Whatever the path (HTTP, stream, feed, replay) and however often an article is delivered, it
is stored once: the source's id, the URL and a hash of the normalised text each identify it,
and each is backed by a unique constraint, so a concurrent second delivery finds the first.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    field_validator,
    model_validator,
)
from sqlalchemy import insert, or_, select, tuple_
from sqlalchemy.orm import Session

from apps.sentiment.entities import EntityMatcher
from apps.sentiment.models import Article, ArticleEntity, LabelCorrection
from core.privacy import mask_personal_data
from core.storage.base import utcnow
from core.storage.engine import upsert_statement
from core.validation import PastDatetime

MAX_TEXT_CHARS = 20_000
MAX_BATCH = 1_000  # articles in one HTTP request
MAX_URL_CHARS = 2_000  # the columns' width (articles, feeds, webhooks)


def _within_url_limit(value: HttpUrl) -> HttpUrl:
    if len(str(value)) > MAX_URL_CHARS:
        raise ValueError(f"a link of more than {MAX_URL_CHARS} characters is not stored")
    return value


# A link the tables can hold: HttpUrl allows 2,083 characters.
StorableUrl = Annotated[HttpUrl, AfterValidator(_within_url_limit)]


class ArticleIn(BaseModel):
    """A news item or post to score. Only `title` is required."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    id: str | None = Field(
        default=None, min_length=1, max_length=300, description="The source's own id."
    )
    source: str = Field(default="api", min_length=1, max_length=100, examples=["reuters"])
    url: StorableUrl | None = Field(default=None, description="Canonical link; also deduplicates.")
    title: str = Field(min_length=1, max_length=MAX_TEXT_CHARS, examples=["Apple beats estimates"])
    body: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    published_at: PastDatetime | None = Field(
        default=None,
        description="When it was published (with a time zone; at most a day ahead of the "
        "server's clock); default: now.",
    )

    @field_validator("id", "source", "title", "body", mode="before")
    @classmethod
    def _without_nul(cls, value: Any) -> Any:
        # NUL means nothing in news, and PostgreSQL stores none: dropped on every ingest path.
        return value.replace("\x00", "") if isinstance(value, str) else value

    @field_validator("title", "body")
    @classmethod
    def _masked(cls, value: str | None) -> str | None:
        # A post or a press release may carry someone's email or phone: never stored as is.
        return mask_personal_data(value) if value else value

    @model_validator(mode="after")
    def _total_length(self) -> ArticleIn:
        total = len(self.title) + len(self.body or "")
        if total > MAX_TEXT_CHARS:
            raise ValueError(
                f"title and body together are {total} characters; the limit is {MAX_TEXT_CHARS}"
            )
        return self

    @property
    def text(self) -> str:
        """What the classifier reads."""
        return article_text(self.title, self.body)


def article_text(title: str, body: str | None) -> str:
    """What the classifier reads of an article (and learns from, once an analyst labels it)."""
    return f"{title}\n{body}" if body else title


def normalised(text: str) -> str:
    """Case, width and spacing differences do not make a different article."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def content_hash(title: str, body: str | None) -> str:
    return hashlib.sha256(normalised(f"{title}\n{body or ''}").encode()).hexdigest()


def canonical_url(url: HttpUrl | str | None) -> str | None:
    if url is None:
        return None
    text = str(url)
    return re.sub(r"#.*$", "", text)  # the fragment never names a different article


@dataclass(frozen=True)
class Stored:
    """One delivered article: the stored row's id and whether this delivery created it."""

    article_id: uuid.UUID
    created: bool


def store_articles(
    session: Session, items: Sequence[ArticleIn], matcher: EntityMatcher
) -> list[Stored]:
    """Insert the articles not stored yet and link them to the entities they mention.

    Returns one `Stored` per item, in order (a repeat inside `items` points to the first).
    Writes but does not commit: the caller commits once the batch is also scored. When
    another transaction stored one of the articles since we looked, the insert raises
    `IntegrityError` (the unique constraints decide); roll back and call again, and the
    second look finds it.
    """
    keys = [_keys(item) for item in items]
    known = _existing(session, keys)
    results: list[Stored] = []
    new_articles: list[dict[str, object]] = []
    links: list[dict[str, object]] = []
    for item, key in zip(items, keys, strict=True):
        found = _lookup(known, key)
        if found is not None:
            results.append(Stored(found, created=False))
            continue
        article_id, published_at = uuid.uuid4(), item.published_at or utcnow()
        new_articles.append(_article_row(article_id, published_at, item, key))
        links += (
            {"article_id": article_id, "entity_id": entity_id, "published_at": published_at}
            for entity_id in matcher.match(item.text)
        )
        _remember(known, key, article_id)
        results.append(Stored(article_id, created=True))
    # Rows, not objects: one multi-row INSERT per table, and nothing for the session to track
    # (the scorer reads the articles back).
    if new_articles:
        session.execute(insert(Article), new_articles)
    if links:
        session.execute(insert(ArticleEntity), links)
    return results


@dataclass(frozen=True)
class _Keys:
    source: str
    external_id: str | None
    url: str | None
    content_hash: str


def _keys(item: ArticleIn) -> _Keys:
    return _Keys(item.source, item.id, canonical_url(item.url), content_hash(item.title, item.body))


def _article_row(
    article_id: uuid.UUID, published_at: dt.datetime, item: ArticleIn, key: _Keys
) -> dict[str, object]:
    """A new article's row (the columns left out take their defaults)."""
    return {
        "id": article_id,
        "source": key.source,
        "external_id": key.external_id,
        "url": key.url,
        "content_hash": key.content_hash,
        "title": item.title,
        "body": item.body,
        "published_at": published_at,
    }


_Known = dict[tuple[str, object], uuid.UUID]


def _existing(session: Session, keys: Sequence[_Keys]) -> _Known:
    hashes = {key.content_hash for key in keys}
    urls = {key.url for key in keys if key.url}
    ids = {(key.source, key.external_id) for key in keys if key.external_id}
    conditions = [Article.content_hash.in_(hashes)]
    if urls:
        conditions.append(Article.url.in_(urls))
    if ids:
        conditions.append(tuple_(Article.source, Article.external_id).in_(ids))
    known: _Known = {}
    rows = session.execute(
        select(
            Article.id, Article.source, Article.external_id, Article.url, Article.content_hash
        ).where(or_(*conditions))
    )
    for article_id, source, external_id, url, digest in rows:
        _remember(known, _Keys(source, external_id, url, digest), article_id)
    return known


def _remember(known: _Known, key: _Keys, article_id: uuid.UUID) -> None:
    known[("hash", key.content_hash)] = article_id
    if key.url:
        known[("url", key.url)] = article_id
    if key.external_id:
        known[("id", (key.source, key.external_id))] = article_id


def _lookup(known: _Known, key: _Keys) -> uuid.UUID | None:
    for probe in (
        ("id", (key.source, key.external_id)) if key.external_id else None,
        ("url", key.url) if key.url else None,
        ("hash", key.content_hash),
    ):
        if probe is not None and probe in known:
            return known[probe]
    return None


def set_correction(session: Session, article_id: uuid.UUID, label: str, analyst: str) -> None:
    """Insert or replace an analyst's label for an article, in one statement: two analysts at
    once leave one correction (the later), never a unique-constraint error."""
    now = utcnow()
    changes = {"label": label, "analyst": analyst, "updated_at": now}
    session.execute(
        upsert_statement(session, LabelCorrection)
        .values(id=uuid.uuid4(), article_id=article_id, created_at=now, **changes)
        .on_conflict_do_update(index_elements=[LabelCorrection.article_id], set_=changes)
    )
