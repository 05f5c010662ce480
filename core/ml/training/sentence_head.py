"""Sentence-head classification: a sentence encoder and a linear head trained end to end.

The head starts as a logistic regression fitted on the encoder's frozen embeddings (already a
strong classifier for sentence encoders such as MiniLM), then encoder and head are fine-tuned
together with cross-entropy: the encoder at a small learning rate, the head at a larger one.
Starting from a good head keeps the early, noisy gradients from wrecking the pretrained
encoder — which is what happens to a fresh random head on the BERT pooler.

The result is an `encoder-head` folder, read by the same loader as the few-shot model.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import save_file
from torch import nn
from transformers import DataCollatorWithPadding, EarlyStoppingCallback, set_seed
from transformers.modeling_outputs import SequenceClassifierOutput

from core.ml.artifacts import HEAD_FILE, ArtifactInfo
from core.ml.device import Placement
from core.ml.evaluation import calibrated_metrics, label_ids_for
from core.ml.loading import load_encoder
from core.ml.predictors import pool
from core.ml.training.arguments import TrainingArguments, TrainingResult
from core.ml.training.classification import scalar_metrics
from core.ml.training.data import LabelledTexts
from core.ml.training.fewshot import fit_head
from core.ml.training.progress import ProgressCallback, ProgressFn, report
from core.ml.training.sequence_models import (
    ClassificationTrainer,
    EncodedTexts,
    balanced_class_weights,
)
from core.ml.training.trainer_setup import checkpoint_folder, hf_arguments, quiet

# The files that make a folder a sentence-transformers model, copied from the base so the
# tuned encoder loads with the same pooling and normalisation everywhere.
SENTENCE_TRANSFORMERS_FILES = (
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling",
    "2_Normalize",
)


class SentenceClassifier(nn.Module):
    """Encoder -> pooled (and normalised) sentence vector -> linear head -> logits."""

    def __init__(
        self,
        encoder: nn.Module,
        weight: np.ndarray,
        bias: np.ndarray,
        *,
        pooling: str,
        normalize: bool,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.head.weight.copy_(torch.from_numpy(weight))  # (C, D)
            self.head.bias.copy_(torch.from_numpy(bias))  # (C,)
        self.pooling = pooling
        self.normalize = normalize

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: Any
    ) -> SequenceClassifierOutput:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]  # (B, T, D)
        sentence = pool(hidden, attention_mask, self.pooling)  # (B, D)
        if self.normalize:
            sentence = nn.functional.normalize(sentence, dim=-1)
        return SequenceClassifierOutput(logits=self.head(sentence))  # (B, C)


def train_sentence_classifier(
    base: Path,
    train: LabelledTexts,
    validation: LabelledTexts,
    args: TrainingArguments,
    output_dir: Path,
    base_reference: str,
    placement: Placement,
    progress: ProgressFn | None,
) -> TrainingResult:
    """Head from frozen embeddings, then both trained together; see the module docstring."""
    labels = train.label_names
    set_seed(args.seed)
    encoder = load_encoder(base, placement.for_training())
    max_length = min(args.max_length, encoder.max_length)
    train_ids = label_ids_for(train.labels, labels)
    report(progress, 0.0, "fitting the initial head on frozen embeddings")
    weight, bias = fit_head(
        encoder.encode(train.texts), train_ids, len(labels), args, c=args.head_c
    )
    model = SentenceClassifier(
        encoder.model.train(),
        weight,
        bias,
        pooling=encoder.pooling,
        normalize=encoder.normalize,
    )
    tokenizer = encoder.tokenizer

    def encode(data: LabelledTexts) -> EncodedTexts:
        encodings = tokenizer(data.texts, truncation=True, max_length=max_length)
        return EncodedTexts(
            {"input_ids": encodings["input_ids"], "attention_mask": encodings["attention_mask"]},
            label_ids_for(data.labels, labels),
        )

    validation_set = encode(validation) if len(validation) else None
    learning_rate = args.learning_rate_for("sentence")
    optimizer = torch.optim.AdamW(
        [
            {"params": model.encoder.parameters(), "lr": learning_rate},
            {"params": model.head.parameters(), "lr": learning_rate * args.head_lr_multiplier},
        ],
        lr=learning_rate,
        weight_decay=args.weight_decay,
    )
    with checkpoint_folder(output_dir) as scratch:
        trainer = ClassificationTrainer(
            model=model,
            args=hf_arguments(
                scratch,
                placement,
                epochs=args.epochs,
                learning_rate=learning_rate,
                batch_size=args.batch_size,
                gradient_accumulation_steps=args.gradient_accumulation_steps,
                weight_decay=args.weight_decay,
                warmup_ratio=args.warmup_ratio,
                seed=args.seed,
                max_steps=args.max_steps,
                evaluate=validation_set is not None,
                eval_steps=args.eval_steps,
                metric_for_best_model=args.metric_for_best_model,
                train_sampling_strategy="group_by_length",
                remove_unused_columns=False,
                label_names=["labels"],  # forward() takes none: tell the Trainer where they are
            ),
            train_dataset=encode(train),
            eval_dataset=validation_set,
            data_collator=DataCollatorWithPadding(tokenizer),
            compute_metrics=lambda prediction: scalar_metrics(prediction, labels),
            callbacks=[ProgressCallback(progress, 0.05, 0.95)],
            class_weights=(
                balanced_class_weights(train_ids, len(labels)) if args.class_weights else None
            ),
            optimizers=(optimizer, None),
            adversarial_epsilon=args.adversarial_epsilon,
        )
        quiet(trainer)
        if validation_set is not None and args.early_stopping_patience:
            trainer.add_callback(EarlyStoppingCallback(args.early_stopping_patience))
        outcome = trainer.train()
        metrics: dict[str, Any] = {}
        temperature = 1.0
        if validation_set is not None:
            report(progress, 0.96, "calibrating on the validation set")
            prediction = trainer.predict(validation_set)
            temperature, metrics = calibrated_metrics(
                np.asarray(prediction.predictions, dtype=np.float64), prediction.label_ids, labels
            )
        state = trainer.state
    report(progress, 0.98, "saving")
    tuned: SentenceClassifier = trainer.model
    _save(tuned, tokenizer, base, output_dir)
    head = {
        "weight": tuned.head.weight.detach().float().cpu().numpy(),
        "bias": tuned.head.bias.detach().float().cpu().numpy(),
    }
    save_file(head, str(output_dir / HEAD_FILE))
    ArtifactInfo(
        architecture="encoder-head",
        base_model=base_reference,
        labels=labels,
        max_length=max_length,
        temperature=temperature,
        pooling=encoder.pooling,
        normalize=encoder.normalize,
    ).save(output_dir)
    metrics.update(
        train_loss=float(outcome.training_loss),
        steps=int(state.global_step),
        epochs=float(state.epoch or 0.0),
        stopped_early=bool(state.max_steps and state.global_step < state.max_steps),
    )
    return TrainingResult(
        output_dir=output_dir,
        architecture="encoder-head",
        labels=labels,
        metrics=metrics,
        primary_metric=args.metric_for_best_model,
    )


def _save(model: SentenceClassifier, tokenizer: Any, base: Path, output_dir: Path) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    model.encoder.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    for name in SENTENCE_TRANSFORMERS_FILES:
        source = base / name
        if source.is_dir():
            shutil.copytree(source, output_dir / name, dirs_exist_ok=True)
        elif source.is_file():
            shutil.copy2(source, output_dir / name)
