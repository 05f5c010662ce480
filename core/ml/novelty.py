"""How unlike its training examples a text is: the cosine to the nearest one.

A classifier's confidence cannot see a question it was never taught when that question sits
close to one it was (Banking77's `card_arrival` beside `card_delivery_estimate`): it answers
it, confidently and wrongly. The similarity to the nearest training example, in the tuned
encoder's own space, catches more of them. `ExampleIndex` holds the training examples'
embeddings in the model folder (`examples.safetensors`), and `unfamiliar_threshold` turns
held-out examples' similarities into the level below which a text counts as unfamiliar.

Only classifiers with a sentence embedding under their head (`encoder-head` folders, in torch
or ONNX) have such a space; the others go without the check.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, TypeGuard

import numpy as np
from safetensors.numpy import load_file, save_file

from core.ml.predictors import TokenIds, map_sorted

EXAMPLES_FILE = "examples.safetensors"
# Rows of the index compared at once: bounds the (batch, rows) similarity matrix in memory.
_CHUNK_ROWS = 16_384


class EmbeddingClassifier(Protocol):
    """A classifier whose head reads a sentence embedding (`encoder-head` models)."""

    labels: list[str]
    embeds: bool

    @property
    def embedding_dimension(self) -> int: ...

    def tokenize(self, texts: Sequence[str]) -> list[TokenIds]: ...

    def embed(self, batch: list[TokenIds]) -> np.ndarray: ...

    def classify(self, embeddings: np.ndarray) -> np.ndarray: ...


def reads_embeddings(classifier: object) -> TypeGuard[EmbeddingClassifier]:
    """Whether `classifier` has a sentence embedding under its head (`EmbeddingClassifier`)."""
    return bool(getattr(classifier, "embeds", False))


class ExampleIndex:
    """Unit-length embeddings of the examples a model was trained on, (N, D)."""

    def __init__(self, vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) == 0:
            raise ValueError(f"an example index needs (N, D) embeddings, got {vectors.shape}")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        self.vectors = vectors / np.maximum(norms, 1e-12)

    def __len__(self) -> int:
        return len(self.vectors)

    def fits(self, classifier: object) -> bool:
        """Whether `classifier` embeds texts in this index's space (same width)."""
        return (
            reads_embeddings(classifier) and classifier.embedding_dimension == self.vectors.shape[1]
        )

    def similarity(self, embeddings: np.ndarray) -> np.ndarray:
        """Cosine of each embedding (B, D) to its nearest example, (B,)."""
        embeddings = np.asarray(embeddings, dtype=np.float32)
        queries = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
        nearest = np.full(len(queries), -1.0, dtype=np.float32)
        for start in range(0, len(self.vectors), _CHUNK_ROWS):
            chunk = self.vectors[start : start + _CHUNK_ROWS]  # (K, D)
            np.maximum(nearest, (queries @ chunk.T).max(axis=1), out=nearest)
        return nearest

    def save(self, folder: Path) -> Path:
        path = folder / EXAMPLES_FILE
        save_file({"vectors": self.vectors}, str(path))
        return path

    @classmethod
    def load(cls, folder: Path) -> ExampleIndex | None:
        """The index saved in a model folder, or None when the model has none."""
        path = folder / EXAMPLES_FILE
        return cls(load_file(str(path))["vectors"]) if path.is_file() else None


def embed_texts(
    classifier: EmbeddingClassifier, texts: Sequence[str], batch_size: int = 32
) -> np.ndarray:
    """The embeddings (N, D) under `classifier`'s head for a list of texts, in their order."""
    return map_sorted(classifier.tokenize(texts), classifier.embed, batch_size)


def unfamiliar_threshold(similarities: np.ndarray, share: float) -> float | None:
    """The similarity under which a text counts as unfamiliar, so that about `share` of
    in-scope texts do: the k-th lowest of the held-out examples' similarities, k = share *
    (n + 1) rounded down, under which a new in-scope text falls with probability k / (n + 1)
    (never more than `share`). Held-out examples are ones the model was not trained on, so
    their nearest training example is as far as a real customer's in-scope question would be.
    None when there are too few of them for that share (n + 1 < 1 / share)."""
    if not 0 < share < 1:
        raise ValueError(f"the share of held-out examples must lie in (0, 1), got {share}")
    ranked = np.sort(np.asarray(similarities, dtype=np.float64))
    k = int(share * (len(ranked) + 1))
    return float(ranked[k - 1]) if k >= 1 else None


def score_texts(
    classifier: EmbeddingClassifier, index: ExampleIndex, texts: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities (N, C) and similarity to the nearest example (N,) of a list of texts:
    the rows the batching engine would give (`with_similarity`), split."""
    rows = map_sorted(classifier.tokenize(texts), with_similarity(classifier, index), 32)
    return rows[:, :-1], rows[:, -1]


def with_similarity(
    classifier: EmbeddingClassifier, index: ExampleIndex
) -> Callable[[list[TokenIds]], np.ndarray]:
    """A batch function for the batching engine: each row is the text's probabilities (C)
    followed by its similarity to the nearest training example, (B, C + 1). One pass of the
    encoder serves both."""

    def run(batch: list[TokenIds]) -> np.ndarray:
        embeddings = classifier.embed(batch)  # (B, D)
        return np.column_stack([classifier.classify(embeddings), index.similarity(embeddings)])

    return run
