"""Fine-tuning: arguments (dataclasses), trainers (functions that run transformers' and
sentence-transformers' training loops) and the model folders they save.

- `train_classifier`: sentence head, full fine-tuning, LoRA, or few-shot (SetFit-style), chosen by
  `TrainingArguments.strategy`;
- `train_embeddings`: contrastive encoder tuning from positive pairs.
"""

from __future__ import annotations

from core.ml.training.arguments import (
    EmbeddingTrainingArguments,
    LoraArguments,
    TrainingArguments,
    TrainingResult,
)
from core.ml.training.classification import choose_strategy, train_classifier
from core.ml.training.data import (
    LabelledTexts,
    data_fingerprint,
    run_fingerprint,
    stratified_split,
    text_digest,
)
from core.ml.training.embedding import train_embeddings

__all__ = [
    "EmbeddingTrainingArguments",
    "LabelledTexts",
    "LoraArguments",
    "TrainingArguments",
    "TrainingResult",
    "choose_strategy",
    "data_fingerprint",
    "run_fingerprint",
    "stratified_split",
    "text_digest",
    "train_classifier",
    "train_embeddings",
]
