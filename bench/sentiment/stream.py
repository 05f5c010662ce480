"""The stream end to end: Redis stream -> one consumer (score, store, evaluate alerts) -> the
dashboard's alert feed.

Throughput: publish a backlog of articles, time one consumer draining it. Lag: publish at a
fixed rate while the consumer runs; now and then a burst of negative headlines about one
company trips its alert rule, and an `AlertFeed` (the code behind the dashboard's live list)
reports when the alert became visible. Lag = visible - published (the burst's last article).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import REPO_ROOT, data_dir


def serving_backends(settings: Any) -> list[tuple[str, dict[str, Any]]]:
    """(label, settings update) of each way to serve the model, ONNX int8 last."""
    import torch

    from core.ml.device import choose_placement

    backends: list[tuple[str, dict[str, Any]]] = [
        ("torch fp32", {"serve_int8": False, "dtype": "float32"})
    ]
    auto = choose_placement(settings.device, "auto").dtype
    if auto != torch.float32:
        name = str(auto).removeprefix("torch.").replace("bfloat16", "bf16")
        backends.append((f"torch {name} (auto)", {"serve_int8": False, "dtype": "auto"}))
    backends.append(("onnx int8", {"serve_int8": True}))
    return backends


def _world(
    workdir: Path,
    redis_url: str | None,
    stream_name: str,
    stream_batch: int | None,
    database_url: str | None = None,
):
    """A database (SQLite in `workdir` unless `database_url`) with a quickly trained sentiment
    model (speed, not quality, is measured), 40 companies and an alert rule."""
    import migrations
    from apps.sentiment.entities import EntityIn, upsert_entities
    from apps.sentiment.models import AlertRule, RuleKind
    from apps.sentiment.settings import load_sentiment_settings
    from apps.sentiment.training import SentimentTrainParams, train_sentiment
    from core.settings import load_settings
    from core.storage.engine import get_session_factory, session_scope

    url = database_url or f"sqlite:///{workdir / 'bench.db'}"
    migrations.upgrade(url)
    settings = load_settings(
        _env_file=None,
        database_url=url,
        artifacts_dir=workdir / "artifacts",
        model_cache_dir=REPO_ROOT / "var" / "models",
    )
    batch = {} if stream_batch is None else {"stream_batch": stream_batch}  # None: the default
    sentiment = load_sentiment_settings(
        _env_file=None, stream_url=redis_url, stream_name=stream_name, **batch
    )
    factory = get_session_factory(url)
    params = SentimentTrainParams(
        arguments={"strategy": "sentence", "max_steps": 10}, include_twitter=False
    )
    train_sentiment(settings, sentiment, factory, params)  # speed, not quality, is measured
    tickers = [f"CO{chr(65 + i // 26)}{chr(65 + i % 26)}" for i in range(40)]
    with session_scope(factory) as session:
        upsert_entities(session, [EntityIn(ticker=t, name=f"Company {t}") for t in tickers])
        session.add(
            AlertRule(name="bench-share", kind=RuleKind.NEGATIVE_SHARE, window_s=600,
                      threshold=0.6, min_articles=5, cooldown_s=0)
        )  # fmt: skip
    return settings, sentiment, factory, tickers


def _history(factory, tickers: list[str], per_day: int, rng: random.Random) -> int:
    """`per_day` scored articles a day for the last 8 days about each company, written as rows
    (a monitor that has been running a while); returns how many."""
    import datetime as dt
    import uuid

    from sqlalchemy import insert, select

    from apps.sentiment.models import Article, ArticleEntity, Entity

    now = dt.datetime.now(dt.UTC)
    with factory() as session:
        ids = {
            ticker: entity_id
            for ticker, entity_id in session.execute(select(Entity.ticker, Entity.id))
        }
        articles, links = [], []
        for ticker in tickers:
            for _ in range(8 * per_day):
                article_id = uuid.uuid4()
                at = now - dt.timedelta(seconds=rng.uniform(60, 8 * 86400))
                score = rng.uniform(-1, 1)
                label = "negative" if score < -0.3 else "positive" if score > 0.3 else "neutral"
                articles.append({"id": article_id, "source": "history", "title": ticker,
                                 "content_hash": article_id.hex, "published_at": at,
                                 "score": score, "label": label, "scored_at": at})  # fmt: skip
                links.append(
                    {"article_id": article_id, "entity_id": ids[ticker], "published_at": at}
                )
        for first in range(0, len(articles), 5000):
            session.execute(insert(Article), articles[first : first + 5000])
            session.execute(insert(ArticleEntity), links[first : first + 5000])
        session.commit()
    return len(articles)


def stream_part(options: argparse.Namespace) -> dict:
    import redis

    from apps.sentiment import stream
    from apps.sentiment.api.alerts import alert_out
    from apps.sentiment.articles import ArticleIn
    from apps.sentiment.feed import AlertFeed
    from apps.sentiment.service import SentimentService
    from apps.sentiment.training import DEMO_LABELLED, load_labelled, load_twitter

    redis_url = options.redis_url
    client = redis.Redis.from_url(redis_url)
    stream_name = f"bench:articles:{int(time.time())}"
    texts = load_twitter(data_dir(), "valid").texts
    demo = load_labelled(DEMO_LABELLED)
    negatives = [t for t, label in zip(demo.texts, demo.labels, strict=True) if label == "negative"]
    rng = random.Random(options.seed)
    backlog_n, rate, seconds = (300, 20.0, 15.0) if options.quick else (3000, 50.0, 60.0)

    with tempfile.TemporaryDirectory(prefix="bench-sentiment-stream-") as scratch:
        settings, sentiment, factory, tickers = _world(
            Path(scratch), redis_url, stream_name, options.stream_batch
        )
        if options.history_per_day:
            stored = _history(factory, tickers, options.history_per_day, rng)
            print(f"history: {stored} scored articles over the last 8 days", flush=True)
        # Throughput: a backlog, drained by one consumer; torch fp32, torch in the dtype `auto`
        # picks here where that is not fp32 (bf16 on CPUs with AMX or AVX512-BF16), then ONNX int8.
        throughput: dict[str, float] = {}
        for backend, update in serving_backends(settings):
            int8 = bool(update.get("serve_int8"))
            served = settings.model_copy(update=update)
            service = SentimentService.create(served, sentiment, factory)
            service.ingestor.scorer.served()  # load (and export) before the clock starts
            consumer = stream.StreamConsumer(
                service.stream_client, service.ingestor, factory, sentiment, name=backend
            )
            consumer.ensure_group()
            # Quiet companies only: the burst companies start the lag test with empty windows.
            backlog = [
                ArticleIn(title=f"${rng.choice(tickers[20:])} {rng.choice(texts)}",
                          source="bench", id=f"{backend}-{i}")
                for i in range(backlog_n)
            ]  # fmt: skip
            stream.publish(service.stream_client, stream_name, backlog)
            started = time.perf_counter()
            while consumer.stats.read < backlog_n:
                consumer.poll(block_ms=100)
            drained_s = time.perf_counter() - started
            throughput[backend] = backlog_n / drained_s
            print(f"{backend}: {backlog_n} articles in {drained_s:.1f} s = "
                  f"{throughput[backend]:.0f}/s", flush=True)  # fmt: skip
            if not int8:
                service.close()  # the int8 service and consumer go on to the lag test

        # Lag: a steady rate, with bursts that trip the alert rule.
        seen: dict[str, float] = {}
        loop = asyncio.new_event_loop()
        feed = AlertFeed(factory, lambda a: alert_out(a).model_dump(mode="json"), interval_s=0.5)

        async def watch() -> None:
            await feed.start()
            with feed.subscribe() as queue:
                while True:
                    alert = await queue.get()
                    if alert["state"] == "firing":
                        seen.setdefault(alert["ticker"], time.monotonic())

        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        watcher = asyncio.run_coroutine_threadsafe(watch(), loop)
        runner = threading.Thread(target=consumer.run, kwargs={"block_ms": 50}, daemon=True)
        runner.start()
        quiet = iter(rng.sample(tickers[20:], 20) * 1000)
        burst_queue = list(tickers[:20])  # each company gets one burst
        burst_every = seconds / (len(burst_queue) + 1)
        published: dict[str, float] = {}
        start = time.monotonic()
        sent = 0
        while time.monotonic() - start < seconds:
            due = start + sent / rate
            time.sleep(max(0.0, due - time.monotonic()))
            elapsed = time.monotonic() - start
            if burst_queue and elapsed >= burst_every * (len(published) + 1):
                ticker = burst_queue.pop(0)
                items = [ArticleIn(title=f"${ticker} {text}", source="bench", id=f"n{ticker}{k}")
                         for k, text in enumerate(rng.sample(negatives, 6))]  # fmt: skip
                stream.publish(service.stream_client, stream_name, items)
                published[ticker] = time.monotonic()
                sent += len(items)
                continue
            item = ArticleIn(
                title=f"${next(quiet)} {rng.choice(texts)}", source="bench", id=f"q{sent}"
            )
            stream.publish(service.stream_client, stream_name, [item])
            sent += 1
        deadline = time.monotonic() + 15
        while len(seen) < len(published) and time.monotonic() < deadline:
            time.sleep(0.1)
        consumer.stop()
        runner.join(timeout=30)
        watcher.cancel()
        asyncio.run_coroutine_threadsafe(feed.stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        lags = [seen[t] - published[t] for t in published if t in seen]
        service.close()
    client.delete(stream_name)
    result = {
        "backlog": backlog_n,
        "stream_batch": sentiment.stream_batch,
        "history_per_day": options.history_per_day,
        "throughput_per_s": throughput,
        "lag_backend": "onnx int8",
        "rate_per_s": rate,
        "seconds": seconds,
        "bursts": len(published),
        "alerts_seen": len(lags),
        "lag_p50_s": float(np.percentile(lags, 50)) if lags else None,
        "lag_p99_s": float(np.percentile(lags, 99)) if lags else None,
    }
    print(
        f"\n## Stream end to end (one consumer, this machine, {sentiment.stream_batch} messages "
        f"a read, {options.history_per_day} articles a day of history per company)\n"
    )
    for backend, rate_per_s in throughput.items():
        print(f"throughput, {backend}: {rate_per_s:.0f} articles/s (target >= 200)")
    if lags:
        print(
            f"alert lag at {rate:.0f} articles/s: p50 {result['lag_p50_s']:.2f} s, "
            f"p99 {result['lag_p99_s']:.2f} s over {len(lags)} alerts (target p99 < 2 s)"
        )
    else:
        print("no alert became visible: lag not measured")
    return result
