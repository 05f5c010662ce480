"""Large offline jobs: stream any number of texts through a predictor with flat memory.

Re-embedding a catalogue or re-scoring an archive may mean millions of texts coming from a
database cursor or a file. `stream_predictions` pulls `chunk_size` texts at a time from the
iterable (never ahead of need), runs them in length-sorted batches, and yields each chunk's
rows in input order, so memory holds one chunk of inputs and outputs whatever the total.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sized
from typing import TypeVar

import numpy as np

from core.ml.batching import BatchPredictor
from core.ml.predictors import map_sorted

K = TypeVar("K")
Progress = Callable[[int, int | None], None]  # (rows done, total rows or None if unknown)


def stream_predictions(
    predictor: BatchPredictor,
    texts: Iterable[str],
    *,
    chunk_size: int = 4096,
    batch_size: int = 32,
    total: int | None = None,
    progress: Progress | None = None,
    show_progress: bool = False,
) -> Iterator[np.ndarray]:
    """Yield the predictor's rows for `texts`, one array (n <= chunk_size, ...) per chunk.

    Concatenated, the chunks are the rows of `predictor.encode(texts)` / `predict_proba`.
    `total` defaults to `len(texts)` when it has one; `progress(done, total)` is called after
    each chunk (for job status), and `show_progress` draws a tqdm bar (for the CLI).
    """
    if total is None and isinstance(texts, Sized):
        total = len(texts)
    keyed = ((None, text) for text in texts)
    chunks = _stream(predictor, keyed, chunk_size, batch_size, total, progress, show_progress)
    return (rows for _keys, rows in chunks)


def stream_keyed_predictions(
    predictor: BatchPredictor,
    records: Iterable[tuple[K, str]],
    *,
    chunk_size: int = 4096,
    batch_size: int = 32,
    total: int | None = None,
    progress: Progress | None = None,
    show_progress: bool = False,
) -> Iterator[tuple[list[K], np.ndarray]]:
    """Like `stream_predictions` for `(key, text)` records (e.g. item id and description):
    yields each chunk's keys with its rows, so results can be stored as they come."""
    if total is None and isinstance(records, Sized):
        total = len(records)
    return _stream(predictor, records, chunk_size, batch_size, total, progress, show_progress)


def _stream(
    predictor: BatchPredictor,
    records: Iterable[tuple[K, str]],
    chunk_size: int,
    batch_size: int,
    total: int | None,
    progress: Progress | None,
    show_progress: bool,
) -> Iterator[tuple[list[K], np.ndarray]]:
    if chunk_size < 1 or batch_size < 1:  # checked now, not when the first chunk is pulled
        raise ValueError(f"chunk_size and batch_size must be >= 1, got {chunk_size}, {batch_size}")
    return _chunks(predictor, iter(records), chunk_size, batch_size, total, progress, show_progress)


def _chunks(
    predictor: BatchPredictor,
    iterator: Iterator[tuple[K, str]],
    chunk_size: int,
    batch_size: int,
    total: int | None,
    progress: Progress | None,
    show_progress: bool,
) -> Iterator[tuple[list[K], np.ndarray]]:
    bar = None
    if show_progress:
        from tqdm.auto import tqdm  # imported here: only the CLI path draws a bar

        bar = tqdm(total=total, unit="text", desc="predicting")
    done = 0
    try:
        # islice pulls exactly one chunk from the source, so a generator is read lazily.
        while chunk := list(itertools.islice(iterator, chunk_size)):
            keys = [key for key, _ in chunk]
            rows = map_sorted(
                predictor.tokenize([text for _, text in chunk]), predictor.run, batch_size
            )  # (n, ...)
            done += len(chunk)
            if bar is not None:
                bar.update(len(chunk))
            if progress is not None:
                progress(done, total)
            yield keys, rows
    finally:
        if bar is not None:
            bar.close()
