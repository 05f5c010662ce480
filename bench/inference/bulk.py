"""Offline encoding: sentences/s of each backend on the same texts, and whether it agrees.

Agreement is checked two ways: mean cosine to our torch fp32 embeddings, and the accuracy of
a nearest-centroid intent classifier (centroids from Banking77 train sentences embedded by
the same backend) on the benchmark's test sentences.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

Encode = Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class BulkResult:
    seconds: float
    texts: int
    embeddings: np.ndarray  # (N, D) of the test texts, L2-normalised

    @property
    def throughput(self) -> float:
        return self.texts / self.seconds


def time_encoders(
    encoders: dict[str, Encode], texts: Sequence[str], repeats: int
) -> dict[str, BulkResult]:
    """Best of `repeats` per encoder (tokenisation included), after one warm-up call each.

    The rounds take turns (every encoder once, then again), so a slow spell on a shared
    machine lands on all of them rather than on whichever was being timed at that moment.
    """
    for encode in encoders.values():
        encode(texts[:64])
    best = dict.fromkeys(encoders, float("inf"))
    embeddings: dict[str, np.ndarray] = {}
    for _ in range(repeats):
        for label, encode in encoders.items():
            started = time.perf_counter()
            embeddings[label] = np.asarray(encode(texts), dtype=np.float32)
            best[label] = min(best[label], time.perf_counter() - started)
    return {
        label: BulkResult(best[label], len(texts), _normalise(embeddings[label]))
        for label in encoders
    }


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.sum(_normalise(a) * _normalise(b), axis=1)))


def centroid_accuracy(
    train: np.ndarray, train_labels: Sequence[str], test: np.ndarray, test_labels: Sequence[str]
) -> float:
    """Accuracy of assigning each test row the label of its nearest class mean (cosine)."""
    classes = sorted(set(train_labels))
    label_array = np.array(train_labels)
    centroids = np.stack([train[label_array == c].mean(axis=0) for c in classes])  # (K, D)
    predicted = np.argmax(_normalise(test) @ _normalise(centroids).T, axis=1)  # (N,)
    return float(np.mean(np.array(classes)[predicted] == np.array(test_labels)))


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)
