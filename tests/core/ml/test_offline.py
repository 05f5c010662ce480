"""Streaming offline predictions: order, chunking, progress, and lazy reading of the input."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from core.ml.offline import stream_keyed_predictions, stream_predictions


class FakePredictor:
    """Rows that identify their text; records the batches it was given."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []  # lengths of each batch's rows, as run saw them

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        return [[ord(c) for c in text] for text in texts]

    def run(self, batch: list[list[int]]) -> np.ndarray:
        self.batches.append([len(ids) for ids in batch])
        return np.array([[len(ids), int("".join(map(chr, ids)).split("-")[1])] for ids in batch])


class CountingSource:
    """A generator of texts that counts how many were pulled from it."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.pulled = 0

    def __iter__(self) -> Iterator[str]:
        for i in range(self.n):
            self.pulled += 1
            yield "t-" + str(i) + " " * ((i * 7) % 5)  # varied lengths, index recoverable


def test_chunks_come_in_input_order_and_the_source_is_read_lazily() -> None:
    predictor = FakePredictor()
    source = CountingSource(10)
    progress: list[tuple[int, int | None]] = []

    chunks = stream_predictions(
        predictor,
        iter(source),
        chunk_size=4,
        batch_size=2,
        progress=lambda done, total: progress.append((done, total)),
    )
    assert source.pulled == 0  # nothing read before the first chunk is asked for
    first = next(chunks)
    assert source.pulled == 4  # exactly one chunk read ahead of the consumer
    assert [row[1] for row in first] == [0, 1, 2, 3]
    rest = list(chunks)

    assert [len(chunk) for chunk in [first, *rest]] == [4, 4, 2]
    indices = np.concatenate([first, *rest])[:, 1]
    np.testing.assert_array_equal(indices, np.arange(10))
    assert progress == [(4, None), (8, None), (10, None)]  # a generator has no known total
    assert all(len(batch) <= 2 and batch == sorted(batch) for batch in predictor.batches)


def test_a_sized_input_reports_its_total() -> None:
    texts = [f"t-{i}" for i in range(5)]
    progress: list[tuple[int, int | None]] = []

    rows = list(
        stream_predictions(
            FakePredictor(), texts, chunk_size=3, progress=lambda *p: progress.append(p)
        )
    )

    assert [len(chunk) for chunk in rows] == [3, 2]
    assert progress == [(3, 5), (5, 5)]


def test_keyed_records_keep_their_keys() -> None:
    records = ((f"item-{i}", f"t-{i}") for i in range(7))

    chunks = list(stream_keyed_predictions(FakePredictor(), records, chunk_size=3))

    keys = [key for chunk_keys, _ in chunks for key in chunk_keys]
    rows = np.concatenate([chunk_rows for _, chunk_rows in chunks])
    assert keys == [f"item-{i}" for i in range(7)]
    np.testing.assert_array_equal(rows[:, 1], np.arange(7))


def test_bad_chunk_size_fails_when_called() -> None:
    with pytest.raises(ValueError, match="chunk_size and batch_size must be >= 1"):
        stream_predictions(FakePredictor(), ["t-1"], chunk_size=0)
