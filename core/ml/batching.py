"""The dynamic batcher: concurrent requests in, one padded model call per batch out.

Every app serves its model through a `DynamicBatcher` so that concurrent HTTP requests share
model calls. The design follows text-embeddings-inference (`queue.rs`, `infer.rs`):

- each request is tokenized once, on arrival, so its cost (token count) is known in the queue;
- a batch is filled in arrival order up to `max_batch_size` rows and a token budget, or with
  whatever is queued once the oldest request has waited `max_wait_ms`;
- requests whose caller has gone (cancelled future, disconnected client) are dropped before
  the model runs;
- the queue is bounded: a full queue refuses new work at once with `Overloaded` (served as
  503 + Retry-After) instead of building a backlog that would time out anyway.

Threading model: the queue and the batching loop live on the event loop; the model runs in one
dedicated worker thread (torch releases the GIL), one batch at a time, so the event loop keeps
accepting requests while a batch runs and the next batch forms meanwhile.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from core.metrics import (
    BATCH_QUEUE_DEPTH,
    BATCH_REQUESTS_REJECTED,
    BATCH_RUN_SECONDS,
    BATCH_SIZE,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
TokenIds = list[int]


class BatchPredictor(Protocol):
    """What the engine needs from a model: the two steps of `core.ml.predictors`."""

    def tokenize(self, texts: Sequence[str], /) -> list[TokenIds]: ...

    def run(self, batch: list[TokenIds], /) -> np.ndarray: ...


class Overloaded(RuntimeError):
    """The batcher's queue is full; the caller should retry after `retry_after_s` seconds."""

    def __init__(self, name: str, pending: int, max_queue: int, retry_after_s: float) -> None:
        super().__init__(
            f"model {name!r} is overloaded: {pending} requests already queued (max_queue="
            f"{max_queue}); retry in {retry_after_s:.2f} s, or add workers / raise max_queue"
        )
        self.retry_after_s = retry_after_s


class BatcherStopped(RuntimeError):
    """The batcher is not running (not started yet, stopped, or its loop failed)."""


@dataclass(frozen=True)
class BatchingConfig:
    """How batches are formed.

    `max_batch_tokens` bounds the padded size of a batch, `rows x longest row` (after
    truncation, special tokens included): that is the (B, T) tensor the model actually
    computes, so it bounds memory and latency per call whatever the mix of lengths.
    `max_queue` counts rows (a `submit_many` of n texts takes n places).
    """

    max_batch_size: int = 32
    max_batch_tokens: int = 8192
    max_wait_ms: float = 5.0
    max_queue: int = 1024
    # The fixed cost of one model call, in padded tokens. A length-sorted batch is cut into
    # several calls where the padding that saves outweighs this; 0 would run every distinct
    # length alone, a huge value always runs one call. Measured for MiniLM on a 2-core CPU
    # with 32 clients (bench.inference): 16 -> 147 req/s, 64 -> 153, 256 -> 165, 1024 -> 141.
    call_overhead_tokens: int = 256

    def __post_init__(self) -> None:
        if self.call_overhead_tokens < 0:
            raise ValueError(
                f"BatchingConfig.call_overhead_tokens must be >= 0, got {self.call_overhead_tokens}"
            )
        for name in ("max_batch_size", "max_batch_tokens", "max_queue"):
            if getattr(self, name) < 1:
                raise ValueError(f"BatchingConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise ValueError(f"BatchingConfig.max_wait_ms must be >= 0, got {self.max_wait_ms}")


@dataclass(eq=False)
class _Request:
    ids: TokenIds
    future: asyncio.Future[np.ndarray]
    arrived: float  # loop.time() when queued
    taken: bool = field(default=False)  # left the queue (batched, cancelled or failed)


class DynamicBatcher(Generic[T]):
    """Batches concurrent `submit` calls into model calls; each caller gets its own row.

    `tokenize(items) -> token ids` runs on arrival (on the event loop: fast tokenizers take
    microseconds per short text); `run(batch of ids) -> array (B, ...)` runs in the worker
    thread. `T` is the input type (`str` for encoders and classifiers). `name` labels the
    batcher's metrics (`textsuite_batch_*{batcher=name}`) and its errors. `packs` says that
    `run` packs rows without padding (`core.ml.predictors`): each batch is then one call instead
    of being cut into groups of similar length.

    Use as `async with DynamicBatcher(...) as batcher:` or call `start()` / `stop()` from an
    app's lifespan.
    """

    def __init__(
        self,
        tokenize: Callable[[list[T]], list[TokenIds]],
        run: Callable[[list[TokenIds]], np.ndarray],
        config: BatchingConfig | None = None,
        *,
        name: str,
        packs: bool = False,
    ) -> None:
        self.config = config or BatchingConfig()
        self.name = name
        self.packs = packs
        self._tokenize = tokenize
        self._run = run
        self._queue: deque[_Request] = deque()
        self._pending = 0  # queued requests whose caller is still waiting
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._closing = False
        self._failure: BaseException | None = None
        self._batch_seconds: float | None = None  # moving average, for Retry-After

    @classmethod
    def for_predictor(
        cls, predictor: BatchPredictor, config: BatchingConfig | None = None, *, name: str
    ) -> DynamicBatcher[str]:
        """A batcher over a `TextEncoder`, `TextClassifier` or anything with tokenize/run."""
        return DynamicBatcher(
            predictor.tokenize, predictor.run, config, name=name, packs=packs_rows(predictor)
        )

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the batching loop on the running event loop and the model's worker thread."""
        if self._task is not None:
            raise RuntimeError(f"batcher {self.name!r} is already started")
        self._wakeup = asyncio.Event()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"batcher-{self.name}"
        )
        self._task = asyncio.create_task(self._serve(), name=f"batcher-{self.name}")
        self._task.add_done_callback(self._loop_ended)

    async def stop(self) -> None:
        """Refuse new requests, fail queued ones with `BatcherStopped`, let the running batch
        finish (its callers get their results), then release the worker thread."""
        if self._task is None or self._closing:
            return
        self._closing = True
        self._fail_queued(BatcherStopped(f"batcher {self.name!r} stopped before this request ran"))
        assert self._wakeup is not None
        self._wakeup.set()
        await asyncio.wait([self._task])  # the loop returns once its running batch is done
        assert self._executor is not None
        self._executor.shutdown(wait=False)

    async def __aenter__(self) -> DynamicBatcher[T]:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def pending(self) -> int:
        """Requests queued and still wanted (the queue depth used for back-pressure)."""
        return self._pending

    # --- submitting ---------------------------------------------------------------------------

    async def submit(self, item: T) -> np.ndarray:
        """The model's output row for one input, e.g. an embedding (D,) or probabilities (C,)."""
        (future,) = self._enqueue([item])
        return await future

    async def submit_many(self, items: Sequence[T]) -> np.ndarray:
        """Rows for several inputs, shape (N, ...), in the order given.

        The rows are queued as separate requests so they can share batches with other callers.
        For more rows than the queue holds use `core.ml.offline.stream_predictions`.
        """
        futures = self._enqueue(list(items))
        rows = await asyncio.gather(*futures)  # cancelling this cancels every row
        return np.stack(rows)

    def _enqueue(self, items: list[T]) -> list[asyncio.Future[np.ndarray]]:
        if not items:
            raise ValueError("nothing to run: got an empty list of inputs")
        if len(items) > self.config.max_queue:
            raise ValueError(
                f"{len(items)} inputs in one call exceed batcher {self.name!r}'s queue of "
                f"{self.config.max_queue}; split the call or use core.ml.offline.stream_predictions"
            )
        self._check_running()
        if self._pending + len(items) > self.config.max_queue:
            BATCH_REQUESTS_REJECTED.labels(self.name).inc(len(items))
            raise Overloaded(self.name, self._pending, self.config.max_queue, self._retry_after())
        # On the event loop, never in a thread: Hugging Face fast tokenizers reconfigure
        # truncation on each call and fail ("Already borrowed") when called concurrently.
        all_ids = self._tokenize(items)
        if len(all_ids) != len(items):
            raise RuntimeError(f"tokenize returned {len(all_ids)} rows for {len(items)} inputs")
        for ids in all_ids:
            if len(ids) > self.config.max_batch_tokens:
                raise ValueError(
                    f"an input of {len(ids)} tokens exceeds batcher {self.name!r}'s budget of "
                    f"{self.config.max_batch_tokens} tokens per batch; raise max_batch_tokens "
                    "or lower the model's max_length"
                )
        loop = asyncio.get_running_loop()
        now = loop.time()
        futures: list[asyncio.Future[np.ndarray]] = []
        for ids in all_ids:
            request = _Request(ids, loop.create_future(), now)
            request.future.add_done_callback(lambda _f, r=request: self._forget(r))
            self._queue.append(request)
            futures.append(request.future)
        self._pending += len(all_ids)
        BATCH_QUEUE_DEPTH.labels(self.name).set(self._pending)
        assert self._wakeup is not None
        self._wakeup.set()
        return futures

    def _check_running(self) -> None:
        if self._failure is not None:
            raise BatcherStopped(
                f"batcher {self.name!r} failed: {self._failure!r}; restart the service"
            ) from self._failure
        if self._task is None or self._closing:
            state = "has been stopped" if self._closing else "is not started"
            raise BatcherStopped(
                f"batcher {self.name!r} {state}; start it in the app's lifespan "
                "(`await batcher.start()` or `async with batcher`)"
            )

    def _forget(self, request: _Request) -> None:
        """Done-callback: a request cancelled while queued no longer counts against the queue."""
        if not request.taken:
            self._release(request)
            BATCH_QUEUE_DEPTH.labels(self.name).set(self._pending)

    def _retry_after(self) -> float:
        # Time to drain the queue at the recent pace, plus one batch for the new request.
        per_batch = self._batch_seconds or max(self.config.max_wait_ms / 1000, 0.05)
        return round((self._pending / self.config.max_batch_size + 1) * per_batch, 3)

    # --- the batching loop --------------------------------------------------------------------

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wait_for_batch(loop)
            if self._closing:
                return
            batch = self._take_batch()
            if batch:
                await self._run_batch(loop, batch)

    async def _wait_for_batch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Return when a full batch is queued, the oldest request's wait is over, or on stop."""
        assert self._wakeup is not None
        while not self._closing:
            self._drop_gone_at_head()
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if self._batch_is_full():
                return
            remaining = self._queue[0].arrived + self.config.max_wait_ms / 1000 - loop.time()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._wakeup.wait()
            except TimeoutError:
                return

    def _drop_gone_at_head(self) -> None:
        while self._queue and (self._queue[0].taken or self._queue[0].future.done()):
            self._release(self._queue.popleft())

    def _release(self, request: _Request) -> None:
        if not request.taken:
            request.taken = True
            self._pending -= 1

    def _batch_is_full(self) -> bool:
        """Whether `_take_batch` would stop at a limit rather than at the end of the queue."""
        rows, longest = 0, 0
        for request in self._queue:
            if request.taken or request.future.done():
                continue
            width = max(longest, len(request.ids))
            if rows and (rows + 1) * width > self.config.max_batch_tokens:
                return True
            rows, longest = rows + 1, width
            if rows >= self.config.max_batch_size:
                return True
        return False

    def _take_batch(self) -> list[_Request]:
        """Pop live requests in arrival order while they fit the row and token budgets."""
        batch: list[_Request] = []
        longest = 0
        while self._queue and len(batch) < self.config.max_batch_size:
            request = self._queue[0]
            if request.taken or request.future.done():  # caller gone: never run it
                self._release(self._queue.popleft())
                continue
            width = max(longest, len(request.ids))
            if batch and (len(batch) + 1) * width > self.config.max_batch_tokens:
                break
            self._release(self._queue.popleft())
            batch.append(request)
            longest = width
        BATCH_QUEUE_DEPTH.labels(self.name).set(self._pending)
        return batch

    def _run_groups(self, groups: list[list[TokenIds]]) -> np.ndarray:
        """Runs in the worker thread: one model call per length group, rows concatenated."""
        return np.concatenate([self._run(group) for group in groups], axis=0)

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, batch: list[_Request]) -> None:
        # Sorted by length, then cut into groups of similar length, so that short requests are
        # not padded to the longest one when a separate call is cheaper than the padding.
        batch.sort(key=lambda request: len(request.ids))
        ids = [request.ids for request in batch]
        cuts = (
            [len(ids)]
            if self.packs
            else length_groups([len(row) for row in ids], self.config.call_overhead_tokens)
        )
        groups = [ids[start:end] for start, end in itertools.pairwise([0, *cuts])]
        BATCH_SIZE.labels(self.name).observe(len(batch))
        started = time.perf_counter()
        try:
            assert self._executor is not None
            output = await loop.run_in_executor(self._executor, self._run_groups, groups)
            if len(output) != len(batch):
                raise RuntimeError(
                    f"model of batcher {self.name!r} returned {len(output)} rows for "
                    f"{len(batch)} inputs"
                )
        except asyncio.CancelledError:
            _fail(batch, BatcherStopped(f"batcher {self.name!r} was cancelled mid-batch"))
            raise
        except Exception as exc:  # this batch's callers get the error; the loop goes on
            log.exception("batch of %d failed in batcher %r", len(batch), self.name)
            _fail(batch, exc)
            return
        finally:
            elapsed = time.perf_counter() - started
            BATCH_RUN_SECONDS.labels(self.name).observe(elapsed)
            self._batch_seconds = (
                elapsed
                if self._batch_seconds is None
                else 0.8 * self._batch_seconds + 0.2 * elapsed
            )
        for row, request in enumerate(batch):
            if not request.future.done():  # its caller may have left while the batch ran
                request.future.set_result(np.array(output[row]))  # a copy, not a view

    def _fail_queued(self, error: BaseException) -> None:
        queued = list(self._queue)
        self._queue.clear()
        for request in queued:
            self._release(request)
        _fail(queued, error)
        BATCH_QUEUE_DEPTH.labels(self.name).set(self._pending)

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            self._failure = BatcherStopped(f"batcher {self.name!r}'s loop was cancelled")
        elif task.exception() is not None:
            self._failure = task.exception()
            log.error("batcher %r's loop failed", self.name, exc_info=self._failure)
        else:
            return
        self._fail_queued(BatcherStopped(f"batcher {self.name!r} failed: {self._failure!r}"))


RETIRE_WAIT_S = 60.0  # how long a replaced batcher may take to answer what it holds


async def retire(batcher: DynamicBatcher[Any]) -> None:
    """Stop a batcher that has been replaced (a newer model version serves), once it has
    answered every request it holds: callers that queued on it get their rows, not a
    `BatcherStopped`. The caller must already send new requests elsewhere."""
    deadline = asyncio.get_running_loop().time() + RETIRE_WAIT_S
    while batcher.pending and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    await batcher.stop()


def retire_later(batcher: DynamicBatcher[Any], tasks: set[asyncio.Task[None]]) -> None:
    """`retire` in a task of its own, kept in `tasks` until done (await them at shutdown)."""
    task = asyncio.create_task(retire(batcher), name=f"retire-{batcher.name}")
    tasks.add(task)
    task.add_done_callback(tasks.discard)


def packs_rows(predictor: object) -> bool:
    """Whether a predictor runs batches packed, without padding (`TextEncoder.packs`)."""
    return bool(getattr(predictor, "packs", False))


def length_groups(lengths: Sequence[int], call_overhead: int) -> list[int]:
    """Where to cut ascending `lengths` into model calls, minimising the padded cost.

    A call over rows i..j-1 costs `call_overhead + (j - i) * lengths[j-1]` (each row padded to
    the call's longest). Returns the end index of each group; the last is `len(lengths)`.
    Dynamic programming over the cut points: O(n^2) for a batch of n rows.
    """
    n = len(lengths)
    best = [0.0] + [float("inf")] * n  # best[j]: cheapest way to run rows 0..j-1
    cut_before = [0] * (n + 1)
    for end in range(1, n + 1):
        for start in range(end):
            cost = best[start] + call_overhead + (end - start) * lengths[end - 1]
            if cost < best[end]:
                best[end], cut_before[end] = cost, start
    cuts: list[int] = []
    end = n
    while end > 0:
        cuts.append(end)
        end = cut_before[end]
    return cuts[::-1]


def _fail(requests: list[_Request], error: BaseException) -> None:
    for request in requests:
        if not request.future.done():
            request.future.set_exception(error)
