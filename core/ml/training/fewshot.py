"""Few-shot classification (SetFit-style): works from about 8 examples per class.

Two steps, as in SetFit (Tunstall et al. 2022):
1. contrastive fine-tuning of the sentence encoder on pairs drawn from the examples — same
   class = similar (1), different classes = dissimilar (0) — with `CosineSimilarityLoss`, so
   that a handful of examples yields many training signals;
2. a logistic-regression head (sklearn) on the tuned embeddings.

The result is an `encoder-head` folder: the encoder, `head.safetensors` (`weight` (C, D),
`bias` (C,)) and a temperature calibrated on the validation examples.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
from transformers import set_seed

from core.ml.artifacts import HEAD_FILE, ArtifactInfo
from core.ml.device import Placement
from core.ml.evaluation import calibrated_metrics, label_ids_for
from core.ml.loading import MODEL_BUILD_LOCK, load_encoder
from core.ml.training.arguments import TrainingArguments, TrainingResult
from core.ml.training.data import LabelledTexts
from core.ml.training.progress import ProgressCallback, ProgressFn, report
from core.ml.training.sentence_pairs import PairCollator, SentenceLossTrainer, TextPairs
from core.ml.training.trainer_setup import checkpoint_folder, hf_arguments, quiet


def contrastive_pairs(
    data: LabelledTexts, per_example: int, seed: int
) -> tuple[list[tuple[str, str]], list[float]]:
    """For each example, `per_example` positive pairs (same label, another example) and as
    many negative pairs (another label), shuffled. Scores are 1.0 / 0.0."""
    rng = random.Random(seed)
    by_label: dict[str, list[int]] = {}
    for index, label in enumerate(data.labels):
        by_label.setdefault(label, []).append(index)
    pairs: list[tuple[str, str]] = []
    scores: list[float] = []
    for _ in range(per_example):
        for index, (text, label) in enumerate(zip(data.texts, data.labels, strict=True)):
            same = by_label[label]
            if len(same) > 1:
                partner = rng.choice(same)
                while partner == index:
                    partner = rng.choice(same)
                pairs.append((text, data.texts[partner]))
                scores.append(1.0)
            other = rng.randrange(len(data))
            while data.labels[other] == label:
                other = rng.randrange(len(data))
            pairs.append((text, data.texts[other]))
            scores.append(0.0)
    order = list(range(len(pairs)))
    rng.shuffle(order)
    return [pairs[i] for i in order], [scores[i] for i in order]


def fit_head(
    embeddings: np.ndarray,
    label_ids: np.ndarray,
    n_classes: int,
    args: TrainingArguments,
    *,
    c: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Logistic regression on embeddings -> (weight (C, D), bias (C,)) for a softmax head.

    `c` is sklearn's inverse regularisation (default: the few-shot head's).
    """
    from sklearn.linear_model import LogisticRegression

    head = LogisticRegression(
        C=c if c is not None else args.fewshot_head_c,
        max_iter=2000,
        class_weight="balanced" if args.class_weights else None,
        random_state=args.seed,
    )
    head.fit(embeddings, label_ids)
    weight = np.zeros((n_classes, embeddings.shape[1]), dtype=np.float32)
    bias = np.zeros(n_classes, dtype=np.float32)
    if n_classes == 2:
        # sklearn keeps one row for two classes: sigmoid(w.x + b) = softmax([0, w.x + b])[1].
        weight[1], bias[1] = head.coef_[0], head.intercept_[0]
    else:
        weight[head.classes_] = head.coef_
        bias[head.classes_] = head.intercept_
    return weight, bias


def train_fewshot(
    base: Path,
    train: LabelledTexts,
    validation: LabelledTexts,
    args: TrainingArguments,
    output_dir: Path,
    base_reference: str,
    placement: Placement,
    progress: ProgressFn | None,
) -> TrainingResult:
    """Contrastive encoder tuning, then a logistic-regression head; see the module docstring."""
    from safetensors.numpy import save_file
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import CosineSimilarityLoss

    labels = train.label_names
    set_seed(args.seed)
    with MODEL_BUILD_LOCK:
        model = SentenceTransformer(str(base), device=str(placement.device))
    model.max_seq_length = min(model.max_seq_length or args.max_length, args.max_length)
    pairs, scores = contrastive_pairs(train, args.fewshot_pairs_per_example, args.seed)
    with checkpoint_folder(output_dir) as scratch:
        trainer = SentenceLossTrainer(
            model=model,
            args=hf_arguments(
                scratch,
                placement,
                epochs=args.fewshot_epochs,
                learning_rate=args.learning_rate_for("fewshot"),
                batch_size=args.batch_size,
                gradient_accumulation_steps=args.gradient_accumulation_steps,
                weight_decay=args.weight_decay,
                warmup_ratio=args.warmup_ratio,
                seed=args.seed,
                max_steps=args.max_steps,
                remove_unused_columns=False,
            ),
            train_dataset=TextPairs(pairs, scores),
            data_collator=PairCollator(model),
            callbacks=[ProgressCallback(progress, 0.0, 0.85)],
            loss=CosineSimilarityLoss(model),
        )
        outcome = quiet(trainer).train()
    model.save(str(output_dir), create_model_card=False)

    # The head is fitted on the embeddings that inference will compute: those of the saved
    # folder read back through the same loader the API uses.
    report(progress, 0.9, "fitting the classification head")
    encoder = load_encoder(output_dir, placement.for_training())  # the head fits exact embeddings
    train_ids = label_ids_for(train.labels, labels)
    weight, bias = fit_head(encoder.encode(train.texts), train_ids, len(labels), args)

    metrics: dict[str, Any] = {"train_loss": float(outcome.training_loss), "pairs": len(pairs)}
    temperature = 1.0
    if len(validation):
        report(progress, 0.95, "calibrating on the validation set")
        logits = encoder.encode(validation.texts) @ weight.T + bias  # (N, C)
        validation_ids = label_ids_for(validation.labels, labels)
        temperature, calibrated = calibrated_metrics(logits, validation_ids, labels)
        metrics.update(calibrated)
    save_file({"weight": weight, "bias": bias}, str(output_dir / HEAD_FILE))
    ArtifactInfo(
        architecture="encoder-head",
        base_model=base_reference,
        labels=labels,
        max_length=encoder.max_length,
        temperature=temperature,
        pooling=encoder.pooling,
        normalize=encoder.normalize,
    ).save(output_dir)
    return TrainingResult(
        output_dir=output_dir,
        architecture="encoder-head",
        labels=labels,
        metrics=metrics,
        primary_metric=args.metric_for_best_model,
    )
