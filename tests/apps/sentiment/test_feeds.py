"""RSS/Atom polling against a local feed server that honours conditional GET."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from fastapi import FastAPI, Request, Response
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from apps.sentiment.articles import ArticleIn
from apps.sentiment.feeds import (
    claim_feed,
    due_feeds,
    entry_article,
    plain_text,
    poll_due_feeds,
    poll_feed,
)
from apps.sentiment.ingest import Ingestor
from apps.sentiment.models import Article, Feed
from apps.sentiment.scoring import NoSentimentModel, SentimentScorer
from apps.sentiment.settings import load_sentiment_settings
from core.ml.serving import ProductionClassifier
from core.security import create_api_key
from core.settings import Settings
from core.storage.engine import get_session_factory, session_scope
from tests.apps.support.fake_chatwoot import ServerThread
from textsuite.service import create_service

RSS = """<?xml version="1.0"?>
<rss version="2.0"><channel><title>Wire</title><link>https://news.example/</link>
<description>Markets</description>{items}</channel></rss>"""
ITEM = """<item><title>{title}</title><link>https://news.example/{n}</link>
<guid>wire-{n}</guid><pubDate>Thu, 26 Nov 2026 13:{n:02d}:00 GMT</pubDate>
<description>&lt;p&gt;Shares &lt;b&gt;fell&lt;/b&gt; &amp;amp; more.&lt;/p&gt;</description>
</item>"""
ATOM = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>Desk</title><id>urn:desk</id>
<updated>2026-11-26T14:00:00Z</updated>
<entry><title>Corvid Bank names a new CFO</title><id>urn:desk:1</id>
<link href="https://desk.example/1"/><updated>2026-11-26T14:00:00Z</updated></entry>
</feed>"""


class FeedServer:
    """Serves an RSS document with an ETag; answers 304 to a matching If-None-Match."""

    def __init__(self) -> None:
        self.titles = ["Halvorsen Pharma shares plunge", "Northwind Robotics wins a contract"]
        self.requests: list[dict[str, str]] = []
        app = FastAPI()

        @app.get("/rss")
        def rss(request: Request) -> Response:
            self.requests.append(dict(request.headers))
            etag = f'"v{len(self.titles)}"'
            if request.headers.get("if-none-match") == etag:
                return Response(status_code=304)
            items = "".join(ITEM.format(title=t, n=i) for i, t in enumerate(self.titles))
            headers = {"ETag": etag, "Last-Modified": "Thu, 26 Nov 2026 14:00:00 GMT"}
            return Response(
                RSS.format(items=items), media_type="application/rss+xml", headers=headers
            )

        @app.get("/atom")
        def atom() -> Response:
            return Response(ATOM, media_type="application/atom+xml")

        @app.get("/broken")
        def broken() -> Response:
            return Response("<html>not a feed", media_type="text/html")

        @app.get("/page")
        def page() -> Response:  # a company's home page, registered by mistake
            return Response("<html><body><p>Welcome</p></body></html>", media_type="text/html")

        @app.get("/gone")
        def gone() -> Response:
            return Response(status_code=410)

        self.server = ServerThread(app)


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    server = FeedServer()
    server.server.start()
    yield server
    server.server.stop()


def add_feed(settings: Settings, url: str, name: str | None = "wire") -> uuid.UUID:
    with session_scope(get_session_factory(settings.database_url)) as session:
        feed = Feed(url=url, name=name)
        session.add(feed)
        session.flush()
        return feed.id


def articles(settings: Settings) -> int:
    with get_session_factory(settings.database_url)() as session:
        return session.scalar(select(func.count(Article.id)))


def test_polling_fetches_only_what_changed(sentiment_settings: Settings, feed_server) -> None:
    factory = get_session_factory(sentiment_settings.database_url)
    ingest = Ingestor(
        factory, SentimentScorer(ProductionClassifier(sentiment_settings, factory, "sentiment"))
    ).ingest
    feed_id = add_feed(sentiment_settings, f"{feed_server.server.url}/rss")

    first = poll_feed(factory, feed_id, ingest)
    assert (first.status, first.entries, first.ingested) == (200, 2, 2)
    second = poll_feed(factory, feed_id, ingest)
    assert second.status == 304 and second.ingested == 0
    assert feed_server.requests[1]["if-none-match"] == '"v2"'
    assert feed_server.requests[1]["if-modified-since"] == "Thu, 26 Nov 2026 14:00:00 GMT"

    feed_server.titles.append("Corvid Bank cuts its dividend")
    third = poll_feed(factory, feed_id, ingest)
    assert (third.status, third.entries, third.ingested) == (200, 3, 1)  # two seen before
    assert articles(sentiment_settings) == 3
    with factory() as session:
        stored = session.scalar(select(Article).where(Article.external_id == "wire-0"))
        feed = session.get(Feed, feed_id)
    assert stored.source == "wire" and stored.url == "https://news.example/0"
    assert stored.body == "Shares fell & more." and stored.published_at.hour == 13
    assert feed.last_status == 200 and feed.etag == '"v3"' and feed.last_error is None


def test_atom_and_failures(sentiment_settings: Settings, feed_server) -> None:
    factory = get_session_factory(sentiment_settings.database_url)
    ingest = Ingestor(
        factory, SentimentScorer(ProductionClassifier(sentiment_settings, factory, "sentiment"))
    ).ingest
    atom = poll_feed(
        factory, add_feed(sentiment_settings, f"{feed_server.server.url}/atom", None), ingest
    )
    assert (atom.status, atom.ingested) == (200, 1)
    broken = poll_feed(
        factory, add_feed(sentiment_settings, f"{feed_server.server.url}/broken"), ingest
    )
    assert broken.ingested == 0 and "not a feed" in broken.error
    page = poll_feed(
        factory, add_feed(sentiment_settings, f"{feed_server.server.url}/page"), ingest
    )
    assert page.error == (
        "not a feed: the URL answers a document that is neither RSS nor Atom (text/html)"
    )
    gone_id = add_feed(sentiment_settings, f"{feed_server.server.url}/gone")
    gone = poll_feed(factory, gone_id, ingest)
    assert gone.status == 410 and "answered 410" in gone.error
    down = poll_feed(factory, add_feed(sentiment_settings, "http://127.0.0.1:9/rss"), ingest)
    assert down.status is None and "ConnectError" in down.error
    with factory() as session:
        assert session.get(Feed, gone_id).last_error.endswith("answered 410")
        source = session.scalar(select(Article.source))
    assert source == "127.0.0.1"  # no name: the host names the source


def test_feeds_over_the_api(sentiment_settings: Settings, feed_server) -> None:
    with session_scope(get_session_factory(sentiment_settings.database_url)) as session:
        key = {"X-API-Key": create_api_key(session, "t", ["sentiment"])[1]}
    with TestClient(create_service(sentiment_settings)) as client:
        url = f"{feed_server.server.url}/rss"
        created = client.post("/v1/sentiment/feeds", json={"url": url, "name": "wire"}, headers=key)
        assert created.status_code == 201
        assert client.post("/v1/sentiment/feeds", json={"url": url}, headers=key).status_code == 409
        assert (
            client.post("/v1/sentiment/feeds", json={"url": "ftp://x"}, headers=key).status_code
            == 422
        )
        polled = client.post(f"/v1/sentiment/feeds/{created.json()['id']}/poll", headers=key)
        assert polled.json() == {"status": 200, "entries": 2, "ingested": 2, "error": None}
        [listed] = client.get("/v1/sentiment/feeds", headers=key).json()
        assert listed["last_status"] == 200
        assert client.delete(f"/v1/sentiment/feeds/{listed['id']}", headers=key).status_code == 204
        missing = client.post(f"/v1/sentiment/feeds/{listed['id']}/poll", headers=key)
        assert missing.status_code == 404


def test_entries_become_articles() -> None:
    assert plain_text("<p>A &amp; B<br/>c</p>") == "A & B c"
    assert entry_article({"title": "  "}, "wire") is None
    article = entry_article({"title": "T", "link": "javascript:alert(1)", "id": "x"}, "wire")
    assert article is not None and article.url is None and article.id == "x"


def test_an_entry_dated_ahead_is_news_of_now() -> None:
    ahead = time.gmtime(time.time() + 3 * 86_400)  # a feed with its time zone wrong
    before = dt.datetime.now(dt.UTC)
    article = entry_article({"title": "T", "published_parsed": ahead}, "wire")
    assert article is not None and article.published_at is not None
    assert before <= article.published_at <= dt.datetime.now(dt.UTC)
    past = time.gmtime(time.time() - 86_400)
    kept = entry_article({"title": "T", "published_parsed": past}, "wire")
    assert kept is not None and kept.published_at < before - dt.timedelta(hours=23)


def test_each_due_feed_is_claimed_by_one_poller(sentiment_settings: Settings) -> None:
    factory = get_session_factory(sentiment_settings.database_url)
    feeds = {add_feed(sentiment_settings, f"https://news.example/{n}.xml") for n in range(3)}
    now = dt.datetime(2026, 11, 26, 14, 0, tzinfo=dt.UTC)

    first, second = due_feeds(factory, 300, now), due_feeds(factory, 300, now)  # two processes
    assert {feed.id for feed in first} == {feed.id for feed in second} == feeds
    assert [claim_feed(factory, feed, now) for feed in first] == [True] * 3
    assert [claim_feed(factory, feed, now) for feed in second] == [False] * 3  # taken

    assert due_feeds(factory, 300, now + dt.timedelta(seconds=299)) == []
    later = now + dt.timedelta(seconds=300)
    assert [claim_feed(factory, f, later) for f in due_feeds(factory, 300, later)] == [True] * 3


def test_one_bad_feed_never_holds_the_others_up(sentiment_settings: Settings, feed_server) -> None:
    factory = get_session_factory(sentiment_settings.database_url)
    bad = add_feed(sentiment_settings, f"{feed_server.server.url}/rss")
    good = add_feed(sentiment_settings, f"{feed_server.server.url}/atom")

    def ingest(articles: list[ArticleIn]) -> list[object]:
        if any("Halvorsen" in a.title for a in articles):  # the /rss feed's entries
            raise RuntimeError("value too long for type character varying(2000)")
        return [SimpleNamespace(duplicate=False) for _ in articles]

    results = poll_due_feeds(factory, ingest, 300)
    assert sorted(r.ingested for r in results) == [0, 1]  # both polled in the same round
    with factory() as session:
        assert "value too long" in session.get(Feed, bad).last_error
        assert session.get(Feed, good).last_error is None
    assert due_feeds(factory, 300) == []  # the bad one is tried again next period, not now


def test_when_nothing_can_be_scored_the_feed_is_handed_back(
    sentiment_settings: Settings, feed_server
) -> None:
    factory = get_session_factory(sentiment_settings.database_url)
    feed_id = add_feed(sentiment_settings, f"{feed_server.server.url}/rss")

    def no_model(_articles: object) -> list[object]:
        raise NoSentimentModel("no production version of 'sentiment'")

    with pytest.raises(NoSentimentModel):
        poll_due_feeds(factory, no_model, 300)
    [due] = due_feeds(factory, 300)  # due again at once, not skipped for a period
    assert due.id == feed_id and due.last_polled_at is None


def test_the_service_polls_its_feeds_by_itself(sentiment_settings: Settings, feed_server) -> None:
    add_feed(sentiment_settings, f"{feed_server.server.url}/rss")
    sentiment = load_sentiment_settings(_env_file=None, feed_poll_s=1)
    with TestClient(create_service(sentiment_settings, sentiment=sentiment)):
        deadline = time.monotonic() + 30
        while articles(sentiment_settings) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert articles(sentiment_settings) == 2
        while len(feed_server.requests) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
    assert feed_server.requests[1]["if-none-match"] == '"v2"'  # polled again, conditionally


def test_entries_older_than_retention_keeps_are_not_stored_again(
    sentiment_settings: Settings, feed_server
) -> None:
    """A feed goes on listing its old entries: with retention on, those it would delete
    within the hour are left out instead of stored and deleted again every hour."""
    from apps.sentiment.service import SentimentService
    from apps.sentiment.settings import load_sentiment_settings

    factory = get_session_factory(sentiment_settings.database_url)
    feed_id = add_feed(sentiment_settings, f"{feed_server.server.url}/rss")
    keep_8_days = load_sentiment_settings(_env_file=None, retention_days=8)
    service = SentimentService.create(sentiment_settings, keep_8_days, factory)
    try:
        old = poll_feed(factory, feed_id, service.ingest_feed_entries)  # dated 26 Nov 2026
        assert (old.entries, old.ingested) == (2, 0) and articles(sentiment_settings) == 0
    finally:
        service.close()
    feed_server.titles.append("Corvid Bank names a new CFO")  # a changed feed: fetched again
    keep_all = SentimentService.create(
        sentiment_settings, load_sentiment_settings(_env_file=None), factory
    )
    try:  # the entries retention left out were not taken in: now they are, with the new one
        assert poll_feed(factory, feed_id, keep_all.ingest_feed_entries).ingested == 3
    finally:
        keep_all.close()


def test_an_entry_is_taken_in_once_even_after_its_article_was_deleted(
    sentiment_settings: Settings, feed_server
) -> None:
    """A feed goes on listing an entry after retention deleted its article (an undated entry
    looks new to the retention filter at every fetch): it is not stored again."""
    factory = get_session_factory(sentiment_settings.database_url)
    ingest = Ingestor(
        factory, SentimentScorer(ProductionClassifier(sentiment_settings, factory, "sentiment"))
    ).ingest
    feed_id = add_feed(sentiment_settings, f"{feed_server.server.url}/rss")
    assert poll_feed(factory, feed_id, ingest).ingested == 2
    with session_scope(factory) as session:  # what retention does, with their company links
        for article in session.scalars(select(Article)):
            session.delete(article)
    feed_server.titles.append("Corvid Bank cuts its dividend")  # changed: fetched in full
    again = poll_feed(factory, feed_id, ingest)
    assert (again.status, again.entries, again.ingested) == (200, 3, 1)
    with factory() as session:
        stored = session.scalars(select(Article.external_id)).all()
        remembered = session.get(Feed, feed_id).entry_keys
    assert stored == ["wire-2"] and len(remembered) == 3
    feed_server.titles.pop()  # an entry the feed no longer lists is forgotten
    assert poll_feed(factory, feed_id, ingest).ingested == 0
    with factory() as session:
        assert len(session.get(Feed, feed_id).entry_keys) == 2
