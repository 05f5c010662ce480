"""The pieces of a sequence-classification run: tokenizer and model set-up (pad token,
dropout, LoRA), the encoded data set, and a `Trainer` with class-weighted cross-entropy."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
)

from core.ml.loading import MODEL_BUILD_LOCK
from core.ml.training.arguments import LoraArguments, TrainingArguments
from core.ml.training.regularisers import (
    adversarial_delta,
    input_embeddings,
    recording_output,
    shifted_output,
)

# Config attributes that hold dropout probabilities, across the architectures we train.
DROPOUT_ATTRIBUTES = (
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "classifier_dropout",
    "attention_dropout",
    "hidden_dropout",
    "dropout",
    "seq_classif_dropout",
)

log = logging.getLogger(__name__)


class EncodedTexts(Dataset):
    """Token ids and label ids, padded per batch by the collator."""

    def __init__(self, encodings: dict[str, list[list[int]]], label_ids: np.ndarray) -> None:
        self.encodings = encodings
        self.label_ids = label_ids

    def __len__(self) -> int:
        return len(self.label_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item: dict[str, Any] = {key: values[index] for key, values in self.encodings.items()}
        item["labels"] = int(self.label_ids[index])
        return item


class ClassificationTrainer(Trainer):
    """A `Trainer` whose loss is cross-entropy, weighted per class when `class_weights` is set
    (inverse frequency, so rare classes count as much as common ones), with adversarial
    training on the input embeddings when `adversarial_epsilon` > 0 (FGM, see
    `core.ml.training.regularisers`)."""

    # The loss below is a per-batch mean: let the Trainer divide it for gradient accumulation.
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        *args: Any,
        class_weights: torch.Tensor | None = None,
        adversarial_epsilon: float = 0.0,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.class_weights = class_weights
        self.adversarial_epsilon = adversarial_epsilon

    def training_step(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        """The usual step; with FGM, a second forward and backward pass on the same batch with
        its word embeddings moved along their gradient (the two gradients add up). The
        returned (logged) loss is the clean one."""
        if not self.adversarial_epsilon:
            return super().training_step(model, inputs, num_items_in_batch)
        layer = input_embeddings(model)
        with recording_output(layer) as outputs:
            loss = super().training_step(model, inputs, num_items_in_batch)
        gradient = outputs[-1].grad if outputs else None  # (B, T, D)
        if gradient is not None:
            with shifted_output(layer, adversarial_delta(gradient, self.adversarial_epsilon)):
                super().training_step(model, inputs, num_items_in_batch)
        return loss

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        labels = inputs["labels"]
        outputs = model(**{key: value for key, value in inputs.items() if key != "labels"})
        logits = outputs.logits  # (B, C)
        weight = None
        if self.class_weights is not None:
            weight = self.class_weights.to(device=logits.device, dtype=torch.float32)
        loss = torch.nn.functional.cross_entropy(logits.float(), labels, weight=weight)
        return (loss, outputs) if return_outputs else loss


def balanced_class_weights(label_ids: np.ndarray, n_classes: int) -> torch.Tensor:
    """n / (C * n_c): sklearn's "balanced" weights."""
    counts = np.bincount(label_ids, minlength=n_classes).astype(np.float64)
    return torch.tensor(len(label_ids) / (n_classes * np.maximum(counts, 1)), dtype=torch.float32)


def load_tokenizer(base: Path) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token is None:
        # Llama-family tokenizers have no pad token; EOS is the usual stand-in.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    base: Path, labels: list[str], args: TrainingArguments, pad_token_id: int | None
) -> PreTrainedModel:
    """A sequence classifier over `base` with a fresh head for `labels`, in float32 (mixed
    precision, when used, comes from autocast; the weights being trained stay float32)."""
    config = AutoConfig.from_pretrained(
        base,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    if args.dropout is not None:
        for attribute in DROPOUT_ATTRIBUTES:
            if hasattr(config, attribute):
                setattr(config, attribute, args.dropout)
    if getattr(config, "pad_token_id", None) is None:
        # Decoders pool the last non-pad token, which needs the pad id to find it.
        config.pad_token_id = pad_token_id
    with MODEL_BUILD_LOCK:
        return AutoModelForSequenceClassification.from_pretrained(
            base, config=config, dtype=torch.float32
        )


def with_lora(
    model: PreTrainedModel, lora: LoraArguments | None, task: str = "SEQ_CLS"
) -> torch.nn.Module:
    """LoRA adapters (peft) on the attention projections. `SEQ_CLS` makes peft train and save
    the new classification head in full (`modules_to_save`); `FEATURE_EXTRACTION` adapts an
    encoder whose output is its hidden states.

    Where peft has no default projections for the architecture (MPNet, ModernBERT, ...) and
    the arguments name none, every linear layer gets an adapter (`all-linear`) rather than
    the run failing."""
    from peft import LoraConfig, TaskType, get_peft_model
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_DEFAULTS

    lora = lora or LoraArguments()
    targets = lora.target_modules
    model_type = getattr(model.config, "model_type", None)
    if targets is None and model_type not in PEFT_DEFAULTS:
        targets = "all-linear"
        log.info("lora: peft names no projections for %s models; adapting every linear layer",
                 model_type)  # fmt: skip
    config = LoraConfig(
        task_type=TaskType(task),
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
    )
    return get_peft_model(model, config)
