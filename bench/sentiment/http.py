"""Articles over HTTP: `POST /v1/sentiment/articles`, one article per request from concurrent
clients, against `textsuite serve` on PostgreSQL (stored, scored and alerts evaluated before
the answer), as deployed (the serving batcher shares model calls between requests) and with
the model called once per request (`TEXTSUITE_BATCH_MAX_SIZE=1`), in turn on one world."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import data_dir, percentile_ms

MODES = {
    "batched (as deployed)": {},
    "one model call per request": {"TEXTSUITE_BATCH_MAX_SIZE": "1"},
}


async def closed_loop(
    base: str, key: str, titles: list[str], clients: int, seconds: float, tag: str
) -> dict:
    """`clients` concurrent posters, each sending its next article when answered."""
    latencies: list[float] = []
    errors = 0
    counter = itertools.count()
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as http:

        async def poster() -> None:
            nonlocal errors
            while time.monotonic() < deadline:
                n = next(counter)
                body = {"title": titles[n % len(titles)], "id": f"{tag}-{n}", "source": "bench"}
                started = time.perf_counter()
                response = await http.post(
                    "/v1/sentiment/articles", json=body, headers={"X-API-Key": key}
                )
                latencies.append(time.perf_counter() - started)
                errors += response.status_code != 200

        started = time.perf_counter()
        await asyncio.gather(*(poster() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return {
        "articles_per_s": len(latencies) / elapsed,
        "p50_ms": percentile_ms(latencies, 50),
        "p99_ms": percentile_ms(latencies, 99),
        "errors": errors,
        "requests": len(latencies),
    }


def http_part(options: argparse.Namespace) -> list[dict]:
    from apps.sentiment.training import load_twitter
    from bench.sentiment.stream import _world
    from bench.support.load import drop_database, running_service, scratch_postgres
    from core.security import create_api_key
    from core.storage.engine import session_scope

    clients, seconds = (8, 5.0) if options.quick else (options.clients, options.seconds)
    url = scratch_postgres(options.postgres_url)
    rows: list[dict] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-sentiment-http-") as scratch:
            settings, _, factory, tickers = _world(Path(scratch), None, "unused", None, url)
            with session_scope(factory) as session:
                key = create_api_key(session, "bench", ["sentiment"])[1]
            rng = random.Random(options.seed)
            texts = load_twitter(data_dir(), "valid").texts
            titles = [f"${rng.choice(tickers)} {text}" for text in texts]
            print(f"{clients} clients, {seconds:g} s per run, modes in turn:", flush=True)
            modes = list(MODES.items())
            order = [
                (r, m)
                for r in range(options.rounds)
                for m in (modes if r % 2 == 0 else modes[::-1])
            ]
            for round_, (mode, env) in order:  # ABBA...: a trend in the host's speed evens out
                with running_service(url, settings.artifacts_dir, **env) as base:
                    asyncio.run(closed_loop(base, key, titles, 4, 3, f"warm{round_}{mode}"))
                    result = asyncio.run(
                        closed_loop(base, key, titles, clients, seconds, f"r{round_}{mode}")
                    )
                rows.append({"mode": mode, "round": round_ + 1, **result})
                print(
                    f"  {mode:28s} {result['articles_per_s']:7.1f} articles/s  "
                    f"p50 {result['p50_ms']:6.0f} ms  p99 {result['p99_ms']:6.0f} ms  "
                    f"errors {result['errors']}",
                    flush=True,
                )
    finally:
        drop_database(options.postgres_url, url)
    return rows
