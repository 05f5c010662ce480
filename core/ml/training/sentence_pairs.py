"""Training a sentence-transformers encoder on text pairs with a transformers `Trainer`.

sentence-transformers' own `SentenceTransformerTrainer` needs the `datasets` package, which
textsuite does not depend on. It is a `Trainer` whose loss is a sentence-transformers loss
over tokenized text columns; `SentenceLossTrainer` is that part alone, and the losses
(`CosineSimilarityLoss`, `MultipleNegativesRankingLoss`, ...) are used unchanged.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Dataset
from transformers import Trainer

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


class TextPairs(Dataset):
    """Rows of (first text, second text[, float label]) for a pair loss."""

    def __init__(
        self, pairs: Sequence[tuple[str, str]], scores: Sequence[float] | None = None
    ) -> None:
        if scores is not None and len(scores) != len(pairs):
            raise ValueError(f"{len(pairs)} pairs but {len(scores)} scores")
        self.pairs = list(pairs)
        self.scores = list(scores) if scores is not None else None

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        first, second = self.pairs[index]
        score = self.scores[index] if self.scores is not None else 0.0
        return {"first": first, "second": second, "score": score}


class PairCollator:
    """Tokenizes each column of a batch with the model's own preprocessing."""

    def __init__(self, model: SentenceTransformer) -> None:
        self.model = model

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "features": [
                self.model.preprocess([row["first"] for row in rows]),
                self.model.preprocess([row["second"] for row in rows]),
            ],
            "labels": torch.tensor([row["score"] for row in rows], dtype=torch.float32),
        }


class SentenceLossTrainer(Trainer):
    """A `Trainer` for a `SentenceTransformer` whose loss is a sentence-transformers loss."""

    loss_is_scaled_for_ga = False  # the losses return per-batch means

    def __init__(self, *args: Any, loss: torch.nn.Module, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loss = loss

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        loss = self.loss(inputs["features"], inputs["labels"])
        return (loss, {}) if return_outputs else loss


def order_without_duplicates(
    pairs: Sequence[tuple[str, str]], batch_size: int, seed: int
) -> list[int]:
    """A shuffled order of `pairs` in which no text appears twice within one batch.

    With in-batch negatives, a text repeated in a batch is scored as its own negative (a false
    negative). Where the tail cannot be split any further, it keeps its duplicates.
    """
    remaining = list(range(len(pairs)))
    random.Random(seed).shuffle(remaining)
    order: list[int] = []
    while remaining:
        batch: list[int] = []
        seen: set[str] = set()
        deferred: list[int] = []
        for position, index in enumerate(remaining):
            texts = set(pairs[index])
            if texts & seen:
                deferred.append(index)
                continue
            batch.append(index)
            seen |= texts
            if len(batch) == batch_size:
                deferred.extend(remaining[position + 1 :])
                break
        order.extend(batch)
        if len(batch) < batch_size:  # nothing more to separate
            order.extend(deferred)
            break
        remaining = deferred
    return order
