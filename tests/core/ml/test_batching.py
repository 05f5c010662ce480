"""The dynamic batcher: batch composition, order, back-pressure, cancellation and stop.

Fake tokenize/run functions make batches observable: a text's token ids are its characters'
codes, and `run` records each batch it gets. A "gate" text blocks the worker thread until the
test opens it, so the test decides exactly what is queued when the next batch forms, without
relying on timing.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from prometheus_client import REGISTRY
from transformers import AutoTokenizer, BertConfig, BertModel

from core.ml.batching import BatcherStopped, BatchingConfig, DynamicBatcher, Overloaded
from core.ml.device import choose_placement
from core.ml.packaged import minilm_folder
from core.ml.predictors import TextEncoder

GATE = "#"  # a text made of this character blocks the worker until the gate opens
HANG_GUARD_S = 10  # a broken batcher fails the test instead of hanging it
R = TypeVar("R")


class FakeModel:
    """Deterministic stand-ins for a predictor's `tokenize` and `run`."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []  # the texts of each batch, in the order run saw them
        self.gate = threading.Event()
        self.gate_reached = threading.Event()

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        return [[ord(c) for c in text] for text in texts]

    def run(self, batch: list[list[int]]) -> np.ndarray:
        texts = ["".join(map(chr, ids)) for ids in batch]
        self.batches.append(texts)
        if any(text.startswith(GATE) for text in texts):
            self.gate_reached.set()
            assert self.gate.wait(HANG_GUARD_S), "test never opened the gate"
        if any("boom" in text for text in texts):
            raise ValueError("model exploded")
        return np.array([expected_row(text) for text in texts], dtype=np.float64)  # (B, 2)


def expected_row(text: str) -> np.ndarray:
    return np.array([len(text), sum(ord(c) * (i + 1) for i, c in enumerate(text))], float)


def run_async(scenario: Callable[[], Coroutine[Any, Any, R]]) -> R:
    """Drive a scenario on a fresh event loop (pytest-asyncio is not used here)."""

    async def guarded() -> R:
        return await asyncio.wait_for(scenario(), HANG_GUARD_S)

    return asyncio.run(guarded())


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.001)


async def hold_worker(batcher: DynamicBatcher[str], model: FakeModel) -> asyncio.Task:
    """Occupy the worker with a gate request, so later submits queue up behind it."""
    task = asyncio.create_task(batcher.submit(GATE))
    await until(model.gate_reached.is_set)
    return task


def batcher_for(model: FakeModel, name: str, **config: float) -> DynamicBatcher[str]:
    return DynamicBatcher(model.tokenize, model.run, BatchingConfig(**config), name=name)


def test_concurrent_callers_get_their_own_rows() -> None:
    model = FakeModel()
    model.gate.set()
    texts = [f"text number {i}" + "x" * (i % 7) for i in range(50)]

    async def scenario() -> None:
        async with batcher_for(model, "own-rows", max_batch_size=8, max_wait_ms=1) as batcher:
            rows = await asyncio.gather(*(batcher.submit(text) for text in texts))
        for text, row in zip(texts, rows, strict=True):
            np.testing.assert_array_equal(row, expected_row(text))

    run_async(scenario)
    assert sum(len(batch) for batch in model.batches) == len(texts)
    assert max(len(batch) for batch in model.batches) <= 8


def test_batches_are_capped_by_size_and_sorted_by_length() -> None:
    model = FakeModel()
    texts = ["ccc", "a", "bbbbb", "dd", "eeee", "f", "gggggg", "hh", "iii", "j"]

    async def scenario() -> None:
        async with batcher_for(model, "size", max_batch_size=4, max_wait_ms=0) as batcher:
            gate = await hold_worker(batcher, model)
            pending = [asyncio.create_task(batcher.submit(text)) for text in texts]
            await until(lambda: batcher.pending == len(texts))
            model.gate.set()
            rows = await asyncio.gather(*pending)
            await gate
        for text, row in zip(texts, rows, strict=True):
            np.testing.assert_array_equal(row, expected_row(text))

    run_async(scenario)
    # Arrival order decides membership (first four, next four, last two); length the order.
    assert model.batches[1:] == [
        ["a", "dd", "ccc", "bbbbb"],
        ["f", "hh", "eeee", "gggggg"],
        ["j", "iii"],
    ]


def test_token_budget_counts_padded_rows() -> None:
    model = FakeModel()
    # Padded cost: 2 rows x 9 = 18 fits a budget of 20; a third row makes 3 x 9 = 27.
    # (Summed token counts, 2 + 9 + 3 = 14, would have let all three in.)
    texts = ["aa", "bbbbbbbbb", "ccc", "dddd", "eeee", "ffff", "gggg", "hhhh"]

    async def scenario() -> None:
        config = {"max_batch_size": 100, "max_batch_tokens": 20, "max_wait_ms": 0}
        async with batcher_for(model, "budget", **config) as batcher:
            gate = await hold_worker(batcher, model)
            pending = [asyncio.create_task(batcher.submit(text)) for text in texts]
            await until(lambda: batcher.pending == len(texts))
            model.gate.set()
            await asyncio.gather(gate, *pending)

    run_async(scenario)
    assert model.batches[1:] == [
        ["aa", "bbbbbbbbb"],
        ["ccc", "dddd", "eeee", "ffff", "gggg"],  # 5 x 4 = 20, exactly the budget
        ["hhhh"],
    ]


def test_a_lone_request_runs_once_its_wait_is_over() -> None:
    model = FakeModel()
    model.gate.set()

    async def scenario() -> np.ndarray:
        async with batcher_for(model, "wait", max_batch_size=32, max_wait_ms=20) as batcher:
            return await batcher.submit("alone")

    np.testing.assert_array_equal(run_async(scenario), expected_row("alone"))
    assert model.batches == [["alone"]]


def test_a_full_batch_does_not_wait() -> None:
    model = FakeModel()
    model.gate.set()

    async def scenario() -> None:
        # A wait far longer than the hang guard: only a full batch can make this finish.
        async with batcher_for(model, "full", max_batch_size=3, max_wait_ms=60_000) as batcher:
            await asyncio.gather(*(batcher.submit(text) for text in ["x", "yy", "zzz"]))

    run_async(scenario)
    assert model.batches == [["x", "yy", "zzz"]]


def test_submit_many_returns_rows_in_the_order_given() -> None:
    model = FakeModel()
    model.gate.set()
    texts = ["longest text here", "a", "mid size", "bb", "c"]

    async def scenario() -> np.ndarray:
        async with batcher_for(model, "many", max_batch_size=2, max_wait_ms=1) as batcher:
            return await batcher.submit_many(texts)

    rows = run_async(scenario)
    assert rows.shape == (5, 2)
    np.testing.assert_array_equal(rows, np.stack([expected_row(text) for text in texts]))


def test_a_full_queue_refuses_at_once_with_retry_after() -> None:
    model = FakeModel()
    rejected = "textsuite_batch_requests_rejected_total"
    before = REGISTRY.get_sample_value(rejected, {"batcher": "overload"}) or 0.0

    async def scenario() -> None:
        async with batcher_for(model, "overload", max_queue=3, max_wait_ms=0) as batcher:
            gate = await hold_worker(batcher, model)
            queued = [asyncio.create_task(batcher.submit(t)) for t in ["a", "b", "c"]]
            await until(lambda: batcher.pending == 3)
            with pytest.raises(Overloaded, match="overloaded: 3 requests") as refused:
                await batcher.submit("one too many")
            assert refused.value.retry_after_s > 0
            with pytest.raises(Overloaded):
                await batcher.submit_many(["d", "e"])
            model.gate.set()
            assert [row[0] for row in await asyncio.gather(*queued)] == [1, 1, 1]
            await gate

    run_async(scenario)
    assert REGISTRY.get_sample_value(rejected, {"batcher": "overload"}) == before + 3
    assert all("one too many" not in batch for batch in model.batches)


def test_requests_of_callers_that_left_are_not_run() -> None:
    model = FakeModel()

    async def scenario() -> None:
        async with batcher_for(model, "cancel", max_queue=2, max_wait_ms=0) as batcher:
            gate = await hold_worker(batcher, model)
            stay = asyncio.create_task(batcher.submit("stay"))
            leave = asyncio.create_task(batcher.submit("leave"))
            await until(lambda: batcher.pending == 2)
            leave.cancel()
            await until(lambda: batcher.pending == 1)  # its place in the queue is free again
            also = asyncio.create_task(batcher.submit("also"))
            await until(lambda: batcher.pending == 2)
            model.gate.set()
            await asyncio.gather(gate, stay, also)
            assert leave.cancelled()

    run_async(scenario)
    assert model.batches[1:] == [["stay", "also"]]  # equal lengths keep arrival order


def test_a_failing_batch_fails_only_its_own_callers() -> None:
    model = FakeModel()

    async def scenario() -> None:
        async with batcher_for(model, "errors", max_batch_size=2, max_wait_ms=0) as batcher:
            gate = await hold_worker(batcher, model)
            tasks = [asyncio.create_task(batcher.submit(t)) for t in ["ok1", "boom", "ok2", "ok3"]]
            await until(lambda: batcher.pending == 4)
            model.gate.set()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            await gate
            assert isinstance(results[0], ValueError) and isinstance(results[1], ValueError)
            np.testing.assert_array_equal(results[2], expected_row("ok2"))
            np.testing.assert_array_equal(results[3], expected_row("ok3"))
            # The loop survives a failed batch.
            np.testing.assert_array_equal(await batcher.submit("after"), expected_row("after"))

    run_async(scenario)


def test_stop_fails_queued_requests_and_finishes_the_running_batch() -> None:
    model = FakeModel()

    async def scenario() -> None:
        batcher = batcher_for(model, "stop", max_wait_ms=0)
        with pytest.raises(BatcherStopped, match="not started"):
            await batcher.submit("too early")
        await batcher.start()
        running = await hold_worker(batcher, model)
        queued = [asyncio.create_task(batcher.submit(t)) for t in ["q1", "q2"]]
        await until(lambda: batcher.pending == 2)
        stopping = asyncio.create_task(batcher.stop())
        await until(lambda: all(task.done() for task in queued))
        model.gate.set()
        await stopping
        np.testing.assert_array_equal(await running, expected_row(GATE))
        for task in queued:
            with pytest.raises(BatcherStopped, match="stopped before this request ran"):
                task.result()
        with pytest.raises(BatcherStopped, match="has been stopped"):
            await batcher.submit("too late")
        assert batcher.pending == 0

    run_async(scenario)
    assert model.batches == [[GATE]]


def test_inputs_that_can_never_fit_are_refused_as_bad_requests() -> None:
    model = FakeModel()

    async def scenario() -> None:
        config = {"max_batch_tokens": 8, "max_queue": 4}
        async with batcher_for(model, "never-fits", **config) as batcher:
            with pytest.raises(ValueError, match="9 tokens exceeds"):
                await batcher.submit("123456789")
            with pytest.raises(ValueError, match="5 inputs in one call exceed"):
                await batcher.submit_many(["a", "b", "c", "d", "e"])
            with pytest.raises(ValueError, match="empty list"):
                await batcher.submit_many([])
            assert batcher.pending == 0

    run_async(scenario)
    assert model.batches == []


def test_engine_matches_encoder_on_a_tiny_bert() -> None:
    tokenizer = AutoTokenizer.from_pretrained(minilm_folder(Path("var/models")))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    encoder = TextEncoder(BertModel(config), tokenizer, choose_placement("cpu"), max_length=64)
    texts = [
        "How do I locate my card?",
        "My top-up failed",
        "I still have not received my new card, I ordered over a week ago and nothing came.",
        "refund",
        "Can I change the PIN of my card at an ATM or only in the app?",
        "why was I charged a fee",
    ] * 3

    async def scenario() -> list[np.ndarray]:
        batcher = DynamicBatcher.for_predictor(
            encoder, BatchingConfig(max_batch_size=4, max_wait_ms=2), name="tiny-bert"
        )
        async with batcher:
            return await asyncio.gather(*(batcher.submit(text) for text in texts))

    rows = np.stack(run_async(scenario))  # (N, D)
    expected = encoder.encode(texts)  # (N, D)
    assert rows.shape == expected.shape == (len(texts), 32)
    np.testing.assert_allclose(rows, expected, atol=1e-5)


def test_length_groups_cut_where_padding_costs_more_than_a_call() -> None:
    from core.ml.batching import length_groups

    short_and_long = [5] * 16 + [40] * 16
    assert length_groups(short_and_long, call_overhead=64) == [16, 32]
    assert length_groups(short_and_long, call_overhead=10_000) == [32]
    assert length_groups([12] * 32, call_overhead=0) == [32]  # equal lengths: nothing to save
    assert length_groups([1, 4, 9, 50], call_overhead=1) == [1, 2, 3, 4]
    assert length_groups([], call_overhead=64) == []


def test_a_mixed_batch_runs_as_calls_of_similar_length() -> None:
    model = FakeModel()
    texts = ["x" * 40, "a", "y" * 41, "b", "c", "z" * 39]

    async def scenario() -> None:
        config = {"max_wait_ms": 0, "call_overhead_tokens": 8}
        async with batcher_for(model, "groups", **config) as batcher:
            gate = await hold_worker(batcher, model)
            pending = [asyncio.create_task(batcher.submit(text)) for text in texts]
            await until(lambda: batcher.pending == len(texts))
            model.gate.set()
            rows = await asyncio.gather(*pending)
            await gate
        for text, row in zip(texts, rows, strict=True):
            np.testing.assert_array_equal(row, expected_row(text))

    run_async(scenario)
    assert model.batches[1:] == [["a", "b", "c"], ["z" * 39, "x" * 40, "y" * 41]]


class FakeClassifier(FakeModel):
    """A `FakeModel` that also answers whole batches directly, as `predict_proba` does."""

    def __init__(self) -> None:
        super().__init__()
        self.direct: list[list[str]] = []

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        self.direct.append(list(texts))
        return np.array([expected_row(text) for text in texts])


def test_threads_share_the_serving_batcher_and_each_version_gets_its_own() -> None:
    import uuid
    from concurrent.futures import ThreadPoolExecutor

    from core.ml.serving import ServedVersion, ServingBatcher

    first = ServedVersion(uuid.uuid4(), 1, FakeClassifier())  # type: ignore[arg-type]
    second = ServedVersion(uuid.uuid4(), 2, FakeClassifier())  # type: ignore[arg-type]
    model = first.classifier
    serving = ServingBatcher(BatchingConfig(max_batch_size=4, max_wait_ms=1), "fake")

    async def scenario() -> None:
        await serving.start()
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(5) as pool:  # request threads, as under asyncio.to_thread
            gate = loop.run_in_executor(pool, serving.predict, first, [GATE])
            await until(model.gate_reached.is_set)
            waiting = [loop.run_in_executor(pool, serving.predict, first, [t]) for t in "abc"]
            await until(lambda: serving._current is not None and serving._current[1].pending == 3)
            # A new version arrives while three requests wait on the old one's batcher: they
            # are still answered by the old version, and the new one gets a batcher of its own.
            promoted = await loop.run_in_executor(pool, serving.predict, second, ["new"])
            model.gate.set()
            rows = await asyncio.gather(gate, *waiting)
            for text, row in zip([GATE, *"abc"], rows, strict=True):
                np.testing.assert_array_equal(row, expected_row(text)[None, :])
            np.testing.assert_array_equal(promoted, expected_row("new")[None, :])
            late = await loop.run_in_executor(pool, serving.predict, first, ["late"])
            assert late.shape == (1, 2) and model.direct == [["late"]]  # replaced: directly
            big = await loop.run_in_executor(pool, serving.predict, second, list("wxyz"))
            assert big.shape == (4, 2) and second.classifier.direct == [list("wxyz")]
        await serving.stop()

    run_async(scenario)
    assert [sorted(batch) for batch in model.batches] == [[GATE], ["a", "b", "c"]]  # one call
    assert second.classifier.batches == [["new"]]
    assert serving.predict(second, ["after"]).shape == (1, 2)  # stopped: called directly
    assert second.classifier.direct[-1] == ["after"]
