"""Serving under concurrent clients: the dynamic batcher vs one-request-at-a-time calls.

Each client is an asyncio task in a closed loop: send one short text, wait for its row, send
the next. The naive server runs each request's model call alone, serialised behind a lock in
a thread pool (what a plain FastAPI endpoint around a model does).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.ml.batching import BatchingConfig, DynamicBatcher

Call = Callable[[str], Awaitable[np.ndarray]]


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds


async def closed_loop(call: Call, texts: Sequence[str], clients: int, seconds: float) -> LoadResult:
    """`clients` concurrent callers for `seconds`; latency as each caller sees it."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    deadline = loop.time() + seconds

    async def client(first: int) -> None:
        index = first
        while loop.time() < deadline:
            started = time.perf_counter()
            await call(texts[index % len(texts)])
            latencies.append(time.perf_counter() - started)
            index += clients

    started = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(clients)))
    elapsed = time.perf_counter() - started
    p50, p99 = np.percentile(np.array(latencies) * 1000, [50, 99])
    return LoadResult(len(latencies), elapsed, float(p50), float(p99))


def naive_call(predictor: Any) -> Call:
    """One request, one model call, one at a time."""
    lock = threading.Lock()

    def run_alone(text: str) -> np.ndarray:
        with lock:
            return predictor.run(predictor.tokenize([text]))[0]

    async def call(text: str) -> np.ndarray:
        return await asyncio.to_thread(run_alone, text)

    return call


async def measure_naive(
    predictor: Any, texts: Sequence[str], levels: Sequence[int], seconds: float
) -> dict[int, LoadResult]:
    call = naive_call(predictor)
    await closed_loop(call, texts, 4, seconds / 4)  # warm-up
    return {n: await closed_loop(call, texts, n, seconds) for n in levels}


async def measure_engine(
    predictor: Any,
    texts: Sequence[str],
    levels: Sequence[int],
    seconds: float,
    config: BatchingConfig,
) -> dict[int, LoadResult]:
    batcher = DynamicBatcher.for_predictor(predictor, config, name="bench")
    async with batcher:
        await closed_loop(batcher.submit, texts, 32, seconds / 4)  # warm-up
        return {n: await closed_loop(batcher.submit, texts, n, seconds) for n in levels}
