"""`textsuite sentiment watchlist|replay|consume` against the sentiment world (SQLite)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update
from typer.testing import CliRunner

from apps.sentiment import stream
from apps.sentiment.demo import NEWS, WATCHLIST, news_until_now
from apps.sentiment.entities import entity_by_ticker
from apps.sentiment.ingest import Ingestor
from apps.sentiment.models import Article, Entity
from apps.sentiment.scoring import SentimentScorer
from apps.sentiment.settings import get_sentiment_settings
from core.ml.serving import ProductionClassifier
from core.settings import Settings, get_settings
from core.storage.base import utcnow
from core.storage.engine import get_session_factory
from core.storage.models import ModelStage, ModelVersion
from tests.apps.sentiment.test_feeds import FeedServer
from textsuite.cli.evaluate import app as eval_app
from textsuite.cli.sentiment import app

runner = CliRunner()


@pytest.fixture
def cli_env(sentiment_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    monkeypatch.setenv("TEXTSUITE_DATABASE_URL", sentiment_settings.database_url)
    monkeypatch.setenv("TEXTSUITE_ARTIFACTS_DIR", str(sentiment_settings.artifacts_dir))
    monkeypatch.delenv("TEXTSUITE_BROKER_URL", raising=False)
    monkeypatch.delenv("TEXTSUITE_SENTIMENT_STREAM_URL", raising=False)
    get_settings.cache_clear()
    get_sentiment_settings.cache_clear()
    yield sentiment_settings
    get_settings.cache_clear()
    get_sentiment_settings.cache_clear()


def count(settings: Settings, model: type) -> int:
    with get_session_factory(settings.database_url)() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_watchlist_import_and_list(cli_env: Settings, tmp_path: Path) -> None:
    result = runner.invoke(app, ["watchlist", "import", str(WATCHLIST)])
    assert result.exit_code == 0, result.output
    assert count(cli_env, Entity) == 14  # 12 imported; NWRB was there already: updated
    listed = runner.invoke(app, ["watchlist", "list"])
    assert "HLVB" in listed.output and "Halvorsen" in listed.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("- {ticker: 'not one', name: X}\n")
    failed = runner.invoke(app, ["watchlist", "import", str(bad)])
    assert failed.exit_code == 1 and "entry 1: ticker" in failed.output
    assert count(cli_env, Entity) == 14

    # An entry updates what it gives: a name alone keeps the aliases and sector.
    with get_session_factory(cli_env.database_url)() as session:
        before = entity_by_ticker(session, "HLVB")
        aliases, sector = list(before.aliases), before.sector
    assert aliases and sector
    renamed = tmp_path / "renamed.yaml"
    renamed.write_text("- {ticker: HLVB, name: Halvorsen Bio}\n")
    assert runner.invoke(app, ["watchlist", "import", str(renamed)]).exit_code == 0
    with get_session_factory(cli_env.database_url)() as session:
        after = entity_by_ticker(session, "HLVB")
        assert (after.name, after.aliases, after.sector) == ("Halvorsen Bio", aliases, sector)


def test_replaying_the_demo_news_in_process(cli_env: Settings, tmp_path: Path) -> None:
    runner.invoke(app, ["watchlist", "import", str(WATCHLIST)])
    news = tmp_path / "news.jsonl"
    news.write_text("".join(a.model_dump_json(exclude_none=True) + "\n" for a in news_until_now()))
    result = runner.invoke(app, ["replay", str(news)])
    assert result.exit_code == 0, result.output
    assert "replayed 312 articles" in result.output
    assert "(10 of them stored before)" in result.output
    assert count(cli_env, Article) == 302  # ten deliveries were repeats
    again = runner.invoke(app, ["replay", str(news)])
    assert again.exit_code == 0 and count(cli_env, Article) == 302
    assert "(312 of them stored before)" in again.output


def test_a_replay_reads_a_pipe(cli_env: Settings, tmp_path: Path) -> None:
    """A pipe reads once: the replay keeps a copy to check, then send."""
    import os

    pipe = tmp_path / "articles.pipe"
    os.mkfifo(pipe)
    lines = NEWS.read_text().splitlines()[:3]

    def write() -> None:
        with pipe.open("w") as writer:
            writer.write("\n".join(lines) + "\n")

    writer = threading.Thread(target=write)
    writer.start()
    result = runner.invoke(app, ["replay", str(pipe)])
    writer.join(timeout=10)
    assert result.exit_code == 0, result.output
    assert "replayed 3 articles" in result.output and count(cli_env, Article) == 3


@pytest.mark.redis
def test_a_replay_onto_a_full_stream_waits_for_the_consumers(
    cli_env: Settings, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """312 articles through a stream that holds 100 unscored: the replay waits whenever the
    backlog is full, and every article is stored once."""
    name = "test:replay-backpressure"
    monkeypatch.setenv("TEXTSUITE_SENTIMENT_STREAM_URL", redis_url)
    monkeypatch.setenv("TEXTSUITE_SENTIMENT_STREAM_NAME", name)
    monkeypatch.setenv("TEXTSUITE_SENTIMENT_STREAM_MAX_BACKLOG", "100")
    monkeypatch.setattr("textsuite.cli.sentiment.REPLAY_BACKOFF_S", 0.2)
    get_sentiment_settings.cache_clear()
    runner.invoke(app, ["watchlist", "import", str(WATCHLIST)])
    news = tmp_path / "news.jsonl"
    news.write_text("".join(a.model_dump_json(exclude_none=True) + "\n" for a in news_until_now()))
    client = stream.connect(redis_url)
    client.delete(name)
    factory = get_session_factory(cli_env.database_url)
    scorer = SentimentScorer(ProductionClassifier(cli_env, factory, "sentiment"))
    consumer = stream.StreamConsumer(
        client, Ingestor(factory, scorer), factory, get_sentiment_settings(), name="c"
    )
    consumer.ensure_group()
    thread = threading.Thread(target=consumer.run, kwargs={"block_ms": 100, "trim_every_s": 0.5})
    thread.start()
    try:
        result = runner.invoke(app, ["replay", str(news), "--batch-size", "50"])
        deadline = time.monotonic() + 60
        while count(cli_env, Article) < 302 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        consumer.stop()
        thread.join(timeout=30)
        client.delete(name)
        client.close()
    assert result.exit_code == 0, result.output
    assert "waiting for the consumers" in result.output  # it was held back at least once
    assert "replayed 312 articles" in result.output
    assert count(cli_env, Article) == 302  # ten deliveries were repeats


def test_a_bad_replay_file_is_refused_whole(cli_env: Settings, tmp_path: Path) -> None:
    lines = NEWS.read_text().splitlines()[:3]
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join([lines[0], "{not json", json.dumps({"body": "x"}), lines[1]]))
    result = runner.invoke(app, ["replay", str(broken)])
    assert result.exit_code == 1
    assert "line 2: not JSON" in result.output and "line 3: title: Field required" in result.output
    assert count(cli_env, Article) == 0


def test_consume_needs_a_stream(cli_env: Settings) -> None:
    result = runner.invoke(app, ["consume"])
    assert result.exit_code == 1 and "TEXTSUITE_SENTIMENT_STREAM_URL" in result.output


def test_the_demo_news_is_shifted_to_end_now() -> None:
    news = news_until_now()
    newest = max(a.published_at for a in news)
    assert abs((utcnow() - newest).total_seconds()) < 60
    assert (newest - min(a.published_at for a in news)).days == 4


def test_feeds_add_and_poll_once(cli_env: Settings) -> None:
    server = FeedServer()
    server.server.start()
    try:
        added = runner.invoke(app, ["feeds", "add", f"{server.server.url}/rss", "--name", "wire"])
        assert added.exit_code == 0, added.output
        polled = runner.invoke(app, ["poll", "--once"])
        assert polled.exit_code == 0, polled.output
        assert "200, 2 entries, 2 new" in polled.output
        again = runner.invoke(app, ["poll", "--once"])
        assert "304, 0 entries, 0 new" in again.output  # conditional GET: nothing changed
    finally:
        server.server.stop()
    assert count(cli_env, Article) == 2


def test_eval_scores_the_production_model_on_a_labelled_file(
    cli_env: Settings, tmp_path: Path
) -> None:
    labelled = tmp_path / "labelled.csv"
    labelled.write_text(
        "text,label\n"
        "Halvorsen Pharma shares plunge after trial failure,negative\n"
        "Northwind Robotics beats estimates and raises guidance,positive\n"
        "Corvid Bank to hold its annual meeting in May,neutral\n"
    )
    result = runner.invoke(eval_app, ["sentiment", "--data", str(labelled)])
    assert result.exit_code == 0, result.output
    assert "sentiment v1 on" in result.output and "3 texts" in result.output
    assert "weighted-F1" in result.output and "negative" in result.output

    labelled.write_text("text,label\nShares plunge,bearish\n")
    wrong = runner.invoke(eval_app, ["sentiment", "--data", str(labelled)])
    assert wrong.exit_code == 1 and "bearish" in wrong.output
    missing = runner.invoke(eval_app, ["sentiment", "--version", "99"])
    assert missing.exit_code == 1 and "no v99" in missing.output


def test_rescore_scores_again_what_another_version_scored(
    cli_env: Settings, tmp_path: Path
) -> None:
    runner.invoke(app, ["watchlist", "import", str(WATCHLIST)])
    news = tmp_path / "news.jsonl"
    news.write_text("".join(a.model_dump_json(exclude_none=True) + "\n" for a in news_until_now()))
    assert runner.invoke(app, ["replay", str(news)]).exit_code == 0
    factory = get_session_factory(cli_env.database_url)
    with factory() as session:
        current = session.scalar(select(Article.model_version_id))
        by_time = session.execute(select(Article.id, Article.published_at).order_by("published_at"))
        ordered = by_time.all()
        older = [row.id for row in ordered[:5] + ordered[-3:]]  # the oldest five, newest three
        cutoff = ordered[-3].published_at
        session.execute(  # as if an older version had scored them
            update(Article)
            .where(Article.id.in_(older))
            .values(model_version_id=None, label="positive", score=0.99)
        )
        production = session.get(ModelVersion, current)
        newer = ModelVersion(  # a later version that scored one and was rolled back
            name=production.name, version=production.version + 1, task=production.task,
            base_model=production.base_model, artifact_path=production.artifact_path,
            stage=ModelStage.ARCHIVED,
        )  # fmt: skip
        session.add(newer)
        session.flush()
        by_newer = ordered[5].id
        session.execute(
            update(Article).where(Article.id == by_newer).values(model_version_id=newer.id)
        )
        session.commit()

    def stale() -> set[Any]:
        with factory() as session:
            found = select(Article.id).where(Article.model_version_id.is_(None))
            return set(session.scalars(found))

    recent = runner.invoke(app, ["rescore", "--since", cutoff.isoformat()])
    assert recent.exit_code == 0, recent.output
    assert stale() == set(older[:5])  # only those published since the cutoff
    everything = runner.invoke(app, ["rescore"])
    assert everything.exit_code == 0, everything.output
    assert stale() == set()
    with factory() as session:
        assert set(session.scalars(select(Article.model_version_id))) == {current}
        assert session.get(Article, by_newer).model_version_id == current  # production's now
        scores = session.scalars(select(Article.score).where(Article.id.in_(older))).all()
    assert 0.99 not in scores
