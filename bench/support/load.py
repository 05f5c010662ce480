"""HTTP load on `POST /v1/support/messages`: the service as deployed (uvicorn, the batcher)
against the same service calling the model once per request (`TEXTSUITE_BATCH_MAX_SIZE=1`)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from bench.common import REPO_ROOT


@dataclass(frozen=True)
class LoadResult:
    messages: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def per_second(self) -> float:
        return self.messages / self.seconds


def scratch_postgres(server_url: str) -> str:
    """A new, empty database on the PostgreSQL server at `server_url`; returns its URL."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"bench_support_{os.getpid()}_{int(time.time())}"
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_database(server_url: str, url: str) -> None:
    """Drop a scratch database made by `scratch_postgres`."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from core.storage.engine import get_engine

    get_engine(url).dispose()
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    engine.dispose()


def prepare_world(workdir: Path, database_url: str | None = None) -> tuple[str, str]:
    """A database with the demo helpdesk and a trained intent model; returns (url, API key).

    `database_url` (PostgreSQL, as deployed) or a SQLite file in `workdir`.
    """
    import migrations
    from apps.support.demo import load_demo
    from apps.support.settings import load_support_settings
    from apps.support.training import train_from_catalogue
    from core.ml.training import TrainingArguments
    from core.security import create_api_key
    from core.settings import load_settings
    from core.storage.engine import get_session_factory, session_scope

    url = database_url or f"sqlite:///{workdir / 'load.db'}"
    migrations.upgrade(url)
    settings = load_settings(_env_file=None, database_url=url, artifacts_dir=workdir / "models")
    factory = get_session_factory(url)
    with session_scope(factory) as session:
        load_demo(session)
        key = create_api_key(session, "bench", ["support"])[1]
    train_from_catalogue(
        settings,
        load_support_settings(_env_file=None),
        factory,
        arguments=TrainingArguments.from_dict({"strategy": "sentence", "epochs": 3}),
    )
    return url, key


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def running_service(url: str, artifacts: Path, **env: str) -> Iterator[str]:
    """`textsuite serve` in its own process, as in production; yields its base URL."""
    port = _free_port()
    environment = {
        **os.environ,
        "TEXTSUITE_DATABASE_URL": url,
        "TEXTSUITE_ARTIFACTS_DIR": str(artifacts),
        "TEXTSUITE_LOG_LEVEL": "WARNING",
        "HF_HUB_OFFLINE": "1",
        **env,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "textsuite", "serve", "--port", str(port)],
        cwd=REPO_ROOT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("the service did not become ready")
        time.sleep(0.5)
    try:
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


async def closed_loop(
    base: str, key: str, texts: list[str], clients: int, seconds: float
) -> LoadResult:
    """`clients` concurrent conversations, each sending its next message when answered."""
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as http:

        async def conversation(number: int) -> None:
            nonlocal errors
            turn = 0
            while time.monotonic() < deadline:
                text = texts[(number * 7 + turn) % len(texts)]
                body = {"conversation_id": f"load-{number}-{turn}", "text": text}
                started = time.perf_counter()
                response = await http.post(
                    "/v1/support/messages", json=body, headers={"X-API-Key": key}
                )
                latencies.append(time.perf_counter() - started)
                errors += response.status_code != 200
                turn += 1

        started = time.perf_counter()
        await asyncio.gather(*(conversation(n) for n in range(clients)))
        elapsed = time.perf_counter() - started
    p50, p99 = np.percentile(np.array(latencies) * 1000, [50, 99])
    return LoadResult(len(latencies), elapsed, float(p50), float(p99), errors)


def measure(
    url: str, key: str, artifacts: Path, texts: list[str], clients: int, seconds: float, **env: str
) -> LoadResult:
    with running_service(url, artifacts, **env) as base:
        asyncio.run(closed_loop(base, key, texts, 4, 3))  # warm-up: model load, first batches
        return asyncio.run(closed_loop(base, key, texts, clients, seconds))
