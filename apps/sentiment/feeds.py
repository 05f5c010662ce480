"""RSS and Atom feeds, polled with conditional GET (ETag / Last-Modified) and parsed by
`feedparser`; new entries go through the same ingestor as every other article.

A feed lists an entry for as long as it likes. Each fetch remembers the entries it took in
(`Feed.entry_keys`, while the feed lists them), and the next one hands only the others to the
ingestor: an entry is taken in once, even after retention deleted its article, and undated
entries, which the retention filter cannot tell old, are not stored again either. The
ingestor answers None for an entry it left out (older than retention keeps): that one is
offered again at the next fetch.
"""

from __future__ import annotations

import calendar
import datetime as dt
import hashlib
import html
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

import feedparser
import httpx
from pydantic import ValidationError
from sqlalchemy import or_, select, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from apps.sentiment.articles import MAX_TEXT_CHARS, ArticleIn
from apps.sentiment.models import Feed
from apps.sentiment.scoring import NoSentimentModel
from core.delivery import redact_url
from core.storage.base import utcnow
from core.storage.engine import session_scope

log = logging.getLogger(__name__)

USER_AGENT = "textsuite-sentiment/1 (+feed poller)"
MAX_ENTRY_KEYS = 2_000  # remembered per feed; a feed listing more may have the rest again


@dataclass(frozen=True)
class PollResult:
    feed_url: str
    status: int | None  # HTTP status; None when the feed could not be reached
    entries: int = 0  # entries in the document
    ingested: int = 0  # of them, articles stored for the first time
    error: str | None = None


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def plain_text(markup: str) -> str:
    """Summaries are HTML: keep the words, drop the tags."""
    parser = _Text()
    parser.feed(markup)
    parser.close()
    return " ".join(html.unescape(" ".join(parser.parts)).split())


def entry_article(entry: Any, source: str) -> ArticleIn | None:
    """An article from a feedparser entry; None for an entry without a usable title."""
    title = plain_text(entry.get("title", ""))[:MAX_TEXT_CHARS]
    if not title:
        return None
    body = plain_text(entry.get("summary", "")) or None
    if body is not None:
        body = body[: MAX_TEXT_CHARS - len(title)] or None
    stamp = entry.get("published_parsed") or entry.get("updated_parsed")
    published = dt.datetime.fromtimestamp(calendar.timegm(stamp), dt.UTC) if stamp else None
    if published is not None:  # a feed dated ahead has its time zone wrong: the news is now
        published = min(published, dt.datetime.now(dt.UTC))
    link = entry.get("link")
    try:
        return ArticleIn(
            id=(entry.get("id") or link or None),
            source=source,
            url=link if link and link.startswith(("http://", "https://")) else None,
            title=title,
            body=body,
            published_at=published,
        )
    except ValidationError as exc:
        log.warning("skipping a feed entry of %s: %s", source, exc)
        return None


def entry_key(article: ArticleIn) -> str:
    """A short digest naming a feed entry: its id or link, else its text."""
    name = article.id or (str(article.url) if article.url else f"{article.title}\n{article.body}")
    return hashlib.sha256(name.encode()).hexdigest()[:32]


def poll_feed(
    factory: sessionmaker[Session],
    feed_id: Any,
    ingest: Callable[[Sequence[ArticleIn]], Sequence[Any]],  # one result or None per entry
    *,
    transport: httpx.BaseTransport | None = None,
    timeout_s: float = 20.0,
) -> PollResult:
    """Fetch one feed if it changed, ingest the entries its last fetch did not list, remember
    its validators and entries."""
    with factory() as session:
        feed = session.get(Feed, feed_id)
        if feed is None:
            raise LookupError(f"no feed {feed_id}")
        url, etag, modified = feed.url, feed.etag, feed.modified
        source = feed.name or httpx.URL(url).host
        listed_before = set(feed.entry_keys)
    headers = {"User-Agent": USER_AGENT}
    if etag:
        headers["If-None-Match"] = etag
    if modified:
        headers["If-Modified-Since"] = modified
    try:
        with httpx.Client(timeout=timeout_s, transport=transport, follow_redirects=True) as client:
            response = client.get(url, headers=headers)
    except httpx.HTTPError as exc:
        return _record(
            factory, feed_id, PollResult(url, None, error=f"{type(exc).__name__}: {exc}")
        )
    if response.status_code == 304:
        return _record(factory, feed_id, PollResult(url, 304))
    if not response.is_success:
        error = f"GET {redact_url(url)} answered {response.status_code}"
        return _record(factory, feed_id, PollResult(url, response.status_code, error=error))
    parsed = feedparser.parse(response.content)
    if parsed.bozo and not parsed.entries:
        error = f"not a feed: {parsed.get('bozo_exception')}"
        return _record(factory, feed_id, PollResult(url, response.status_code, error=error))
    if not parsed.version and not parsed.entries:  # well-formed, but a web page (a wrong URL)
        kind = response.headers.get("Content-Type", "no Content-Type").split(";")[0]
        error = f"not a feed: the URL answers a document that is neither RSS nor Atom ({kind})"
        return _record(factory, feed_id, PollResult(url, response.status_code, error=error))
    articles = [a for a in (entry_article(e, source) for e in parsed.entries) if a is not None]
    keys = [entry_key(article) for article in articles]
    new = [(a, key) for a, key in zip(articles, keys, strict=True) if key not in listed_before]
    results = ingest([article for article, _ in new]) if new else []
    ingested = sum(r is not None and not r.duplicate for r in results)
    taken = {key for (_, key), r in zip(new, results, strict=True) if r is not None}
    remembered = [key for key in dict.fromkeys(keys) if key in listed_before or key in taken]
    outcome = PollResult(url, response.status_code, len(parsed.entries), ingested)
    return _record(
        factory,
        feed_id,
        outcome,
        etag=response.headers.get("ETag"),
        modified=response.headers.get("Last-Modified"),
        entry_keys=remembered[:MAX_ENTRY_KEYS],
    )


@dataclass(frozen=True)
class DueFeed:
    id: uuid.UUID
    last_polled_at: dt.datetime | None  # as read: the claim checks nobody moved it since


def due_feeds(
    factory: sessionmaker[Session], every_s: float, now: dt.datetime | None = None
) -> list[DueFeed]:
    """The feeds not polled for `every_s` seconds, never-polled and longest-waiting first."""
    cutoff = (now or utcnow()) - dt.timedelta(seconds=every_s)
    with factory() as session:
        rows = session.execute(
            select(Feed.id, Feed.last_polled_at)
            .where(or_(Feed.last_polled_at.is_(None), Feed.last_polled_at <= cutoff))
            .order_by(Feed.last_polled_at.is_not(None), Feed.last_polled_at)
        ).all()
    return [DueFeed(feed_id, polled) for feed_id, polled in rows]


def claim_feed(factory: sessionmaker[Session], feed: DueFeed, now: dt.datetime) -> bool:
    """Take `feed` for this caller: its `last_polled_at` moves from what `due_feeds` read to
    `now` only if no other process moved it first (compare and set), so that any number of
    processes may poll on a timer and each feed is fetched by one of them."""
    return _move_polled_at(factory, feed.id, feed.last_polled_at, now)


def poll_due_feeds(
    factory: sessionmaker[Session],
    ingest: Callable[[Sequence[ArticleIn]], Sequence[Any]],
    every_s: float,
    *,
    ready: Callable[[], object] | None = None,
) -> list[PollResult]:
    """Claim and poll the feeds that are due, one at a time: what a service process does every
    so often. `ready` (e.g. "is there a model to score with?") is asked before each claim.

    When nothing can be polled now (no model, the database away) the feed is handed back and
    the round ends; a failure of one feed's own is recorded on it (retried next period) and the
    round goes on, so one bad feed never holds the others up."""
    results = []
    for feed in due_feeds(factory, every_s):
        if ready is not None:
            ready()
        now = utcnow()
        if not claim_feed(factory, feed, now):
            continue  # another process has it
        try:
            results.append(poll_feed(factory, feed.id, ingest))
        except (NoSentimentModel, OperationalError, InterfaceError):
            _move_polled_at(factory, feed.id, now, feed.last_polled_at)  # hand it back
            raise
        except Exception as exc:
            log.exception("polling feed %s failed", feed.id)
            with factory() as session:
                url = session.scalar(select(Feed.url).where(Feed.id == feed.id)) or ""
            error = f"{type(exc).__name__}: {exc}"[:2000]
            results.append(_record(factory, feed.id, PollResult(url, None, error=error)))
    return results


def _move_polled_at(
    factory: sessionmaker[Session],
    feed_id: uuid.UUID,
    was: dt.datetime | None,
    to: dt.datetime | None,
) -> bool:
    """Set a feed's `last_polled_at` to `to` if it is still `was` (compare and set)."""
    same = Feed.last_polled_at.is_(None) if was is None else Feed.last_polled_at == was
    with session_scope(factory) as session:
        moved = session.execute(
            update(Feed).where(Feed.id == feed_id, same).values(last_polled_at=to)
        ).rowcount  # type: ignore[attr-defined]
    return bool(moved)


def _record(
    factory: sessionmaker[Session],
    feed_id: Any,
    result: PollResult,
    *,
    etag: str | None = None,
    modified: str | None = None,
    entry_keys: list[str] | None = None,
) -> PollResult:
    with session_scope(factory) as session:
        feed = session.get(Feed, feed_id)
        if feed is not None:
            feed.last_polled_at, feed.last_status, feed.last_error = (
                utcnow(),
                result.status,
                result.error,
            )
            if result.status is not None and 200 <= result.status < 300:
                feed.etag, feed.modified = etag, modified
            if entry_keys is not None:
                feed.entry_keys = entry_keys
    if result.error:
        log.warning("feed %s (%s): %s", feed_id, redact_url(result.feed_url), result.error)
    return result
