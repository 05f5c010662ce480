"""The ingest stream on a real Redis: at-least-once delivery, stored and scored exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from apps.sentiment import stream
from apps.sentiment.articles import ArticleIn
from apps.sentiment.ingest import Ingestor
from apps.sentiment.models import Article, DeadLetter
from apps.sentiment.scoring import SentimentScorer
from apps.sentiment.settings import SentimentSettings, load_sentiment_settings
from core.ml.serving import ProductionClassifier
from core.settings import Settings
from core.storage.engine import get_session_factory
from tests.apps.sentiment.test_api import key_for
from tests.conftest import REPO_ROOT
from textsuite.service import create_service

SUBJECTS = ["Northwind Robotics", "Halvorsen Pharma", "Corvid Bank", "$NWRB", "$HLVP"]
EVENTS = [
    "beats profit forecasts",
    "cuts its outlook",
    "to present at a conference",
    "wins a large contract",
    "faces a lawsuit",
    "names a new CFO",
]


def headlines(n: int) -> list[ArticleIn]:
    """`n` distinct articles (distinct ids, URLs and texts)."""
    return [
        ArticleIn(
            id=f"t-{i}",
            source="test",
            url=f"https://news.example/t/{i}",
            title=f"{SUBJECTS[i % len(SUBJECTS)]} {EVENTS[i % len(EVENTS)]} (item {i})",
        )
        for i in range(n)
    ]


@pytest.fixture
def stream_settings(redis_url: str) -> SentimentSettings:
    return load_sentiment_settings(
        _env_file=None,
        stream_url=redis_url,
        stream_name="test:articles",
        stream_batch=16,
        stream_claim_idle_ms=1000,
        stream_max_deliveries=2,
    )


@pytest.fixture
def client(stream_settings: SentimentSettings) -> Iterator[redis.Redis]:
    connection = stream.connect(stream_settings.stream_url)
    connection.delete(stream_settings.stream_name)  # each test starts from an empty stream
    yield connection
    connection.delete(stream_settings.stream_name)
    connection.close()


def consumer_for(
    settings: Settings, sentiment: SentimentSettings, client: redis.Redis, name: str
) -> stream.StreamConsumer:
    factory = get_session_factory(settings.database_url)
    scorer = SentimentScorer(ProductionClassifier(settings, factory, sentiment.model_name))
    consumer = stream.StreamConsumer(
        client, Ingestor(factory, scorer), factory, sentiment, name=name
    )
    consumer.ensure_group()
    return consumer


def drain(consumer: stream.StreamConsumer, deadline_s: float = 60.0) -> None:
    """Poll until nothing is left pending or unread (reclaiming what others left behind)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        consumer.poll(block_ms=100)
        summary = consumer.client.xpending(consumer.stream, consumer.group)
        groups = consumer.client.xinfo_groups(consumer.stream)
        if summary["pending"] == 0 and groups[0]["lag"] == 0:
            return
    raise AssertionError("the stream did not drain in time")


def metric_samples() -> dict[str, float]:
    """This process's Prometheus counters of the ingest path, as `/metrics` would show them."""

    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    return {
        "lags": value("textsuite_sentiment_stream_lag_seconds_count"),
        "lag_s": value("textsuite_sentiment_stream_lag_seconds_sum"),
        "stored": value("textsuite_sentiment_articles_total", outcome="stored"),
        "duplicate": value("textsuite_sentiment_articles_total", outcome="duplicate"),
        "dead_lettered": value("textsuite_sentiment_articles_total", outcome="dead_lettered"),
    }


def stored(settings: Settings) -> tuple[int, int, int]:
    """(articles, distinct source ids, scored articles)."""
    with get_session_factory(settings.database_url)() as session:
        return (
            session.scalar(select(func.count(Article.id))),
            session.scalar(select(func.count(func.distinct(Article.external_id)))),
            session.scalar(select(func.count(Article.id)).where(Article.score.is_not(None))),
        )


def test_published_articles_are_scored_stored_and_acknowledged(
    sentiment_settings: Settings, stream_settings: SentimentSettings, client: redis.Redis
) -> None:
    items = headlines(40)
    consumer = consumer_for(sentiment_settings, stream_settings, client, "a")
    before = metric_samples()
    stream.publish(client, stream_settings.stream_name, items)
    stream.publish(client, stream_settings.stream_name, items[:10])  # delivered twice
    drain(consumer)
    assert stored(sentiment_settings) == (40, 40, 40)
    assert consumer.stats.ingested == 40 and consumer.stats.duplicates == 10
    after = metric_samples()
    assert after["lags"] - before["lags"] == 50  # every message, from publish to stored
    assert 0 < after["lag_s"] - before["lag_s"] < 50 * 60
    assert (after["stored"] - before["stored"], after["duplicate"] - before["duplicate"]) == (
        40,
        10,
    )
    assert (
        client.xpending(stream_settings.stream_name, stream_settings.stream_group)["pending"] == 0
    )


def test_messages_of_a_consumer_that_died_are_reclaimed(
    sentiment_settings: Settings, stream_settings: SentimentSettings, client: redis.Redis
) -> None:
    stream.publish(client, stream_settings.stream_name, headlines(20))
    dead = consumer_for(sentiment_settings, stream_settings, client, "dead")
    # Made first: loading its model on a busy machine must not take claim_idle_ms.
    survivor = consumer_for(sentiment_settings, stream_settings, client, "survivor")
    taken = dead._read(block_ms=100)  # read, then "crash" before storing or acknowledging
    assert len(taken) == 16
    survivor.poll(block_ms=100)  # the 4 nobody has read yet
    assert stored(sentiment_settings)[0] == 4
    time.sleep(1.1)  # the dead consumer's messages are now idle past claim_idle_ms
    drain(survivor)
    assert survivor.stats.reclaimed == 16
    assert stored(sentiment_settings) == (20, 20, 20)


def test_a_full_backlog_refuses_more_and_trimming_keeps_what_is_unfinished(
    sentiment_settings: Settings, stream_settings: SentimentSettings, client: redis.Redis
) -> None:
    """Nothing unread is trimmed away: producers are refused past the backlog limit, and
    consumers trim only entries every group has acknowledged."""
    name, group = stream_settings.stream_name, stream_settings.stream_group
    stream.publish(client, name, headlines(30))
    assert stream.backlog(client, name, group) == 30  # no consumer yet: all of it waits
    with pytest.raises(stream.StreamFull, match="30 articles behind \\(limit 35\\)"):
        stream.publish(client, name, headlines(40)[30:], group=group, max_backlog=35)
    assert client.xlen(name) == 30  # refused as a whole

    consumer = consumer_for(sentiment_settings, stream_settings, client, "a")
    consumer.poll(block_ms=100)  # 16 stored and acknowledged
    dead = consumer_for(sentiment_settings, stream_settings, client, "dead")
    assert len(dead._read(block_ms=100)) == 14  # delivered, never acknowledged
    assert stream.backlog(client, name, group) == 14
    assert stream.trim_finished(client, name) == 16
    assert client.xlen(name) == 14
    assert stream.trim_finished(client, name) == 0  # the pending ones wait for their reclaim

    time.sleep(1.1)
    drain(consumer)  # reclaimed from the trimmed stream
    assert stored(sentiment_settings) == (30, 30, 30)
    assert stream.backlog(client, name, group) == 0
    stream.publish(client, name, headlines(40)[30:], group=group, max_backlog=35)
    assert stream.trim_finished(client, name) == 14 and client.xlen(name) == 10


def test_what_is_not_an_article_is_dead_lettered_at_once(
    sentiment_settings: Settings, stream_settings: SentimentSettings, client: redis.Redis
) -> None:
    name = stream_settings.stream_name
    consumer = consumer_for(sentiment_settings, stream_settings, client, "a")
    before = metric_samples()["dead_lettered"]
    client.xadd(name, {"article": "{not json"})
    client.xadd(name, {"article": '{"body": "no title"}'})
    client.xadd(name, {"something": "else"})
    stream.publish(client, name, headlines(2))
    drain(consumer)
    assert stored(sentiment_settings)[0] == 2
    with get_session_factory(sentiment_settings.database_url)() as session:
        letters = session.scalars(select(DeadLetter).order_by(DeadLetter.message_id)).all()
    assert [letter.deliveries for letter in letters] == [1, 1, 1]
    assert "not an article: not JSON" in letters[0].error
    assert "title: Field required" in letters[1].error and "no 'article' field" in letters[2].error
    assert letters[2].payload == {"something": "else"}
    assert metric_samples()["dead_lettered"] - before == 3
    with TestClient(create_service(sentiment_settings)) as http:
        key = key_for(sentiment_settings, "sentiment")
        retried = http.post(f"/v1/sentiment/dead-letters/{letters[2].id}/retry", headers=key)
        assert retried.status_code == 422 and "no 'article' field" in retried.text
        gone = http.delete(f"/v1/sentiment/dead-letters/{letters[2].id}", headers=key)
        assert gone.status_code == 204
        assert len(http.get("/v1/sentiment/dead-letters", headers=key).json()) == 2
        far = http.get("/v1/sentiment/dead-letters?offset=9223372036854775808", headers=key)
        assert far.status_code == 422 and "offset" in far.text  # not past what a database takes


def test_an_article_that_keeps_failing_is_dead_lettered_after_the_allowed_deliveries(
    sentiment_settings: Settings,
    stream_settings: SentimentSettings,
    client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    consumer = consumer_for(sentiment_settings, stream_settings, client, "a")
    real_ingest = consumer.ingestor.ingest

    def poisoned(items):
        if any("poison" in item.title for item in items):
            raise RuntimeError("scoring blew up")
        return real_ingest(items)

    monkeypatch.setattr(consumer.ingestor, "ingest", poisoned)
    items = [*headlines(3), ArticleIn(id="p", source="test", title="poison pill")]
    stream.publish(client, stream_settings.stream_name, items)
    consumer.poll(block_ms=100)  # the batch fails; its good articles go through one by one
    assert stored(sentiment_settings)[0] == 3
    assert consumer.stats.failed_batches == 1 and consumer.stats.dead_lettered == 0
    time.sleep(1.1)
    drain(consumer)  # second delivery of the poison: max_deliveries = 2 reached
    with get_session_factory(sentiment_settings.database_url)() as session:
        [letter] = session.scalars(select(DeadLetter)).all()
    assert letter.deliveries == 2 and "scoring blew up" in letter.error
    assert stored(sentiment_settings)[0] == 3

    # What failed is fixed (the API's own scorer is sound): ingested again, the letter goes.
    with TestClient(create_service(sentiment_settings)) as http:
        key = key_for(sentiment_settings, "sentiment")
        [listed] = http.get("/v1/sentiment/dead-letters", headers=key).json()
        assert listed["id"] == str(letter.id) and "poison pill" in listed["payload"]["article"]
        retried = http.post(f"/v1/sentiment/dead-letters/{letter.id}/retry", headers=key)
        assert retried.status_code == 200 and retried.json()["duplicate"] is False, retried.text
        assert http.get("/v1/sentiment/dead-letters", headers=key).json() == []
    assert stored(sentiment_settings)[0] == 4


def test_a_consumer_killed_mid_batch_loses_no_article(
    sentiment_settings: Settings,
    sentiment_world: Path,
    stream_settings: SentimentSettings,
    client: redis.Redis,
) -> None:
    """SIGKILL a real `textsuite sentiment consume` process while it scores; a second consumer
    reclaims its pending batch: every article stored and scored exactly once."""
    total = 400
    stream.publish(client, stream_settings.stream_name, headlines(total))
    env = {
        **os.environ,
        "TEXTSUITE_DATABASE_URL": sentiment_settings.database_url,
        "TEXTSUITE_ARTIFACTS_DIR": str(sentiment_world.parent / "artifacts"),
        "TEXTSUITE_MODEL_CACHE_DIR": str(sentiment_settings.model_cache_dir),
        "TEXTSUITE_SENTIMENT_STREAM_URL": stream_settings.stream_url,
        "TEXTSUITE_SENTIMENT_STREAM_NAME": stream_settings.stream_name,
        "TEXTSUITE_SENTIMENT_STREAM_BATCH": "16",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "textsuite", "sentiment", "consume", "--name", "doomed"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while stored(sentiment_settings)[0] < 48:
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the consumer made no progress"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        process.stderr.close()
    killed_at = stored(sentiment_settings)[0]
    left = client.xpending(stream_settings.stream_name, stream_settings.stream_group)
    assert killed_at < total
    assert left["pending"] > 0, "killed between batches: nothing was in flight"
    assert left["consumers"][0]["name"] == "doomed"

    time.sleep(1.1)  # past claim_idle_ms: the dead consumer's batch may be reclaimed
    survivor = consumer_for(sentiment_settings, stream_settings, client, "survivor")
    drain(survivor, deadline_s=180)
    assert stored(sentiment_settings) == (total, total, total)
    assert survivor.stats.reclaimed >= left["pending"]


def test_a_database_outage_is_waited_out_and_loses_or_dead_letters_nothing(
    sentiment_settings: Settings,
    stream_settings: SentimentSettings,
    client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The database restarting under a running consumer (its writes and its sweep raise
    OperationalError for a while) must not end the consumer, nor count against articles."""
    from sqlalchemy.exc import OperationalError

    consumer = consumer_for(sentiment_settings, stream_settings, client, "a")
    down = threading.Event()
    down.set()

    def unreachable(real):
        def call(*args, **kwargs):
            if down.is_set():
                raise OperationalError("SELECT 1", {}, ConnectionRefusedError("port 5432"))
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(consumer.ingestor, "ingest", unreachable(consumer.ingestor.ingest))
    monkeypatch.setattr(consumer.ingestor, "sweep", unreachable(consumer.ingestor.sweep))
    stream.publish(client, stream_settings.stream_name, headlines(10))
    runner = threading.Thread(target=consumer.run, kwargs={"block_ms": 50, "sweep_every_s": 2.0})
    runner.start()
    try:
        time.sleep(3.5)  # tries at 1, 2 s ... backing off
        assert runner.is_alive() and stored(sentiment_settings)[0] == 0
        down.clear()  # back
        deadline = time.monotonic() + 60
        while stored(sentiment_settings)[0] < 10 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        consumer.stop()
        runner.join(timeout=60)
    assert stored(sentiment_settings) == (10, 10, 10)
    assert consumer.stats.dead_lettered == 0 and consumer.stats.failed_batches == 0
