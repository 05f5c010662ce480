"""Redis killed and restarted under the ingest stream while a consumer is scoring.

Producers (the API) and the consumer reconnect by themselves; the API refuses articles during
the outage (503, nothing queued) and says in each 202 how durable the queue is. What a restart
loses is the Redis server's persistence, measured here on a private `redis-server` run both
ways: with nothing on disk, the articles queued and not yet stored are gone (and the count is
reported); with an append-only file fsynced on every write, nothing is lost. Either way nothing
is stored twice.
"""

from __future__ import annotations

import logging
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from apps.sentiment import stream
from apps.sentiment.articles import ArticleIn
from apps.sentiment.ingest import Ingested, Ingestor
from apps.sentiment.models import Article
from apps.sentiment.scoring import SentimentScorer
from apps.sentiment.settings import SentimentSettings, load_sentiment_settings
from core.ml.serving import ProductionClassifier
from core.security import create_api_key
from core.settings import Settings
from core.storage.engine import get_session_factory, session_scope
from tests.apps.sentiment.conftest import sentiment_settings, sentiment_world  # noqa: F401
from textsuite.service import create_service

PERSISTENCE = {
    "none": ["--save", "", "--appendonly", "no"],
    "aof-always": ["--save", "", "--appendonly", "yes", "--appendfsync", "always"],
}


class PrivateRedis:
    """A `redis-server` of the test's own, so that it can be killed and started again."""

    def __init__(self, folder: Path, options: Sequence[str]) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (.ci/run installs it)"
        folder.mkdir(parents=True, exist_ok=True)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.command = [
            binary,
            *("--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(folder)),
            *("--logfile", str(folder / "redis.log")),
            *options,
        ]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(self.command)
        probe = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 20
        while True:
            try:
                probe.ping()
                break
            except redis.RedisError:
                assert self.process.poll() is None, "redis-server exited at start-up"
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        while probe.info("persistence")["loading"]:  # replaying its append-only file
            time.sleep(0.05)
        probe.close()

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)  # no shutdown save: a crash
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()


class SlowScorer:
    """Holds the consumer's next batch inside `ingest` while closed: it has been read from the
    stream and not yet stored or acknowledged when Redis dies."""

    def __init__(self, ingest: Callable[[Sequence[ArticleIn]], list[Ingested]]) -> None:
        self.ingest, self.open, self.held = ingest, threading.Event(), 0
        self.open.set()

    def __call__(self, items: Sequence[ArticleIn]) -> list[Ingested]:
        if not self.open.is_set():
            self.held = len(items)
            self.open.wait()
        return self.ingest(items)


def articles(start: int, count: int) -> dict[str, object]:
    return {
        "articles": [
            {"id": f"r-{i}", "source": "wire", "title": f"Corvid Bank update number {i}"}
            for i in range(start, start + count)
        ]
    }


def stored(settings: Settings) -> tuple[int, int]:
    """(articles stored, distinct source ids)."""
    with get_session_factory(settings.database_url)() as session:
        return (
            session.scalar(select(func.count(Article.id))) or 0,
            session.scalar(select(func.count(func.distinct(Article.external_id)))) or 0,
        )


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture(params=sorted(PERSISTENCE))
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, PrivateRedis]]:
    private = PrivateRedis(tmp_path / "redis", PERSISTENCE[request.param])
    private.start()
    yield request.param, private
    private.stop()


def test_redis_restarted_mid_stream(
    server: tuple[str, PrivateRedis],
    sentiment_settings: Settings,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    persistence, redis_server = server
    sentiment: SentimentSettings = load_sentiment_settings(
        _env_file=None,
        stream_url=redis_server.url,
        stream_name="restart:articles",
        stream_batch=16,
        stream_claim_idle_ms=1000,
    )
    factory = get_session_factory(sentiment_settings.database_url)
    with session_scope(factory) as session:
        headers = {"X-API-Key": create_api_key(session, "restart", ["sentiment"])[1]}
    scorer = SentimentScorer(ProductionClassifier(sentiment_settings, factory, "sentiment"))
    consumer = stream.StreamConsumer(
        stream.connect(redis_server.url), Ingestor(factory, scorer), factory, sentiment, name="c"
    )
    slow = SlowScorer(consumer.ingestor.ingest)
    consumer.ingestor.ingest = slow  # type: ignore[method-assign]
    thread = threading.Thread(target=consumer.run, kwargs={"block_ms": 100, "trim_every_s": 0.5})
    caplog.set_level(logging.WARNING, logger="apps.sentiment.service")

    with TestClient(create_service(sentiment_settings, sentiment=sentiment)) as client:
        thread.start()
        try:
            first = client.post("/v1/sentiment/articles", json=articles(0, 40), headers=headers)
            assert first.status_code == 202, first.text
            assert first.json()["durability"] == persistence
            wait_for(lambda: stored(sentiment_settings)[0] == 40, "the first 40 to be stored")

            slow.open.clear()  # the scorer falls behind: a backlog builds up
            queued = client.post("/v1/sentiment/articles", json=articles(40, 60), headers=headers)
            assert queued.status_code == 202, queued.text
            wait_for(lambda: slow.held > 0, "the consumer to take a batch")

            redis_server.kill()
            refused = client.post("/v1/sentiment/articles", json=articles(100, 5), headers=headers)
            assert refused.status_code == 503 and "nothing was queued" in refused.text
            assert refused.headers["retry-after"]
            assert client.get("/readyz").json()["checks"]["sentiment_stream"] != "ok"
            slow.open.set()  # the held batch is stored; its acknowledgement cannot reach Redis
            wait_for(lambda: stored(sentiment_settings)[0] == 40 + slow.held, "the held batch")

            redis_server.start()
            after = client.post("/v1/sentiment/articles", json=articles(100, 20), headers=headers)
            assert after.status_code == 202, after.text  # the API's client reconnected
            assert client.get("/readyz").status_code == 200

            accepted = 40 + 60 + 20
            lost = {"none": 60 - slow.held, "aof-always": 0}[persistence]
            wait_for(
                lambda: stored(sentiment_settings)[0] == accepted - lost,
                f"{accepted - lost} articles stored (the consumer reconnected)",
            )
            time.sleep(1.5)  # anything still to come (a redelivery) would land now
        finally:
            consumer.stop()
            thread.join(timeout=30)
    count, distinct = stored(sentiment_settings)
    print(
        f"\nRedis restarted mid-stream, persistence {persistence}: {accepted} articles accepted,"
        f" {accepted - count} lost (queued, not yet stored), {count - distinct} stored twice"
    )
    assert (count, distinct) == (accepted - lost, accepted - lost)
    warned = "keeps nothing on disk" in caplog.text
    assert warned is (persistence == "none")  # said at start-up, where operators look
