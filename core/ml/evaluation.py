"""Metrics for trained models: classification quality, calibration and retrieval.

Every function returns plain Python numbers, lists and dicts, so results can be stored as JSON
with a training run and compared between model versions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from core.ml.predictors import softmax

if TYPE_CHECKING:
    from core.ml.training.data import LabelledTexts

ECE_BINS = 15
# Temperatures outside this range mean the validation set is too small or too easy to say
# anything; clamping keeps a degenerate fit from making a model absurdly (un)confident.
TEMPERATURE_BOUNDS = (0.05, 20.0)


class ProbabilisticClassifier(Protocol):
    labels: list[str]

    def predict_proba(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray: ...


def expected_calibration_error(
    probabilities: np.ndarray, label_ids: np.ndarray, bins: int = ECE_BINS
) -> float:
    """Top-label ECE (Guo et al. 2017): confidence vs accuracy in `bins` equal-width bins.

    The weighted mean gap |accuracy - mean confidence| over bins, weights = share of examples.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)  # (N, C)
    label_ids = np.asarray(label_ids)
    confidence = probabilities.max(axis=1)  # (N,)
    correct = probabilities.argmax(axis=1) == label_ids  # (N,)
    # Bins are (lo, hi]; a confidence of exactly 0 (impossible for a softmax) joins the first.
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            gap = abs(correct[members].mean() - confidence[members].mean())
            ece += members.mean() * gap
    return float(ece)


def negative_log_likelihood(logits: np.ndarray, label_ids: np.ndarray) -> float:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(label_ids)), label_ids].mean())


def fit_temperature(logits: np.ndarray, label_ids: np.ndarray) -> float:
    """The temperature T for softmax(logits / T): temperature scaling (Guo et al. 2017), i.e.
    the T minimising the validation NLL, with a standard-normal prior on log T.

    Why the prior: on a small validation set that the model gets entirely right (common with
    few-shot data), the NLL keeps falling as T -> 0 and plain minimisation returns an absurdly
    confident model. The prior (weight 1/N per example) keeps such fits moderate and vanishes
    with more data. NLL is convex in 1/T, so a bounded scalar search over log T finds the
    optimum; the result lies in `TEMPERATURE_BOUNDS`.
    """
    logits = np.asarray(logits, dtype=np.float64)
    label_ids = np.asarray(label_ids)
    n = len(label_ids)
    if n == 0:
        raise ValueError("cannot fit a temperature on an empty validation set")
    low, high = np.log(TEMPERATURE_BOUNDS[0]), np.log(TEMPERATURE_BOUNDS[1])
    found = minimize_scalar(
        lambda log_t: (
            negative_log_likelihood(logits / np.exp(log_t), label_ids) + 0.5 * log_t**2 / n
        ),
        bounds=(low, high),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(np.exp(found.x))


def classification_metrics(
    label_ids: Sequence[int] | np.ndarray,
    probabilities: np.ndarray,
    labels: Sequence[str],
) -> dict[str, Any]:
    """Accuracy, macro/weighted F1, ECE, NLL, per-class report and confusion matrix.

    `label_ids` index into `labels`; `probabilities` is (N, C) in the same label order.
    """
    y_true = np.asarray(label_ids)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.shape != (len(y_true), len(labels)):
        raise ValueError(
            f"probabilities of shape {probabilities.shape} do not match {len(y_true)} examples "
            f"and {len(labels)} labels"
        )
    y_pred = probabilities.argmax(axis=1)
    every = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=every, zero_division=0
    )
    eps = 1e-12
    nll = -np.log(np.clip(probabilities[np.arange(len(y_true)), y_true], eps, 1.0)).mean()
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        # Averaged over the labels that occur (truth or prediction): a class absent from a
        # small validation set and never predicted would otherwise count as F1 = 0.
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, average="weighted", zero_division=0)),
        "ece": expected_calibration_error(probabilities, y_true),
        "nll": float(nll),
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
        "confusion_matrix": {
            "labels": list(labels),
            "matrix": confusion_matrix(y_true, y_pred, labels=every).tolist(),
        },
    }


def label_metrics(truth: Sequence[str], predicted: Sequence[str]) -> dict[str, float]:
    """Accuracy, macro and weighted F1 of predicted label names, averaged as in
    `classification_metrics` (over the labels that occur): for models with other label sets."""
    return {
        "accuracy": float(accuracy_score(truth, predicted)),
        "macro_f1": float(f1_score(truth, predicted, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(truth, predicted, average="weighted", zero_division=0)),
    }


def label_ids_for(names: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """Indices of `names` in `labels`; an unknown name is an error that lists the known ones."""
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted(set(names) - set(index))
    if unknown:
        raise ValueError(f"labels {unknown} are not among the model's labels: {', '.join(labels)}")
    return np.array([index[name] for name in names], dtype=np.int64)


def evaluate_classifier(
    classifier: ProbabilisticClassifier, data: LabelledTexts, batch_size: int = 32
) -> dict[str, Any]:
    """`classification_metrics` of any predictor with `predict_proba(texts)` and `labels`."""
    label_ids = label_ids_for(data.labels, classifier.labels)
    probabilities = classifier.predict_proba(data.texts, batch_size=batch_size)
    metrics = classification_metrics(label_ids, probabilities, classifier.labels)
    metrics["n"] = len(data)
    return metrics


def retrieval_metrics(queries: np.ndarray, documents: np.ndarray) -> dict[str, float]:
    """Accuracy@1 and MRR when query i's one relevant document is document i (cosine)."""
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True).clip(min=1e-12)
    documents = documents / np.linalg.norm(documents, axis=1, keepdims=True).clip(min=1e-12)
    scores = queries @ documents.T  # (Q, D)
    relevant = scores[np.arange(len(queries)), np.arange(len(queries))][:, None]  # (Q, 1)
    ranks = (scores > relevant).sum(axis=1) + 1  # (Q,) 1 = relevant document first
    return {
        "accuracy@1": float((ranks == 1).mean()),
        "mrr": float((1.0 / ranks).mean()),
    }


def calibrated_metrics(
    logits: np.ndarray, label_ids: np.ndarray, labels: Sequence[str]
) -> tuple[float, dict[str, Any]]:
    """Fit a temperature on validation logits, then `classification_metrics` of the calibrated
    probabilities (with the uncalibrated ECE beside them, to show what calibration did)."""
    logits = np.asarray(logits, dtype=np.float64)
    temperature = fit_temperature(logits, label_ids)
    metrics = classification_metrics(label_ids, softmax(logits / temperature), labels)
    metrics["temperature"] = temperature
    metrics["ece_uncalibrated"] = expected_calibration_error(softmax(logits), label_ids)
    return temperature, metrics


def _lowest_threshold(scores: np.ndarray, correct: np.ndarray, target: float) -> float:
    """The lowest `t` such that predictions with score >= t are right at least `target` of the
    time (ties kept together); above every score when no threshold reaches the target."""
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], correct[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)  # precision of the top k
    last_of_tie = np.r_[ranked[1:] != ranked[:-1], True]  # a cut may not split equal scores
    valid = np.flatnonzero((precision >= target) & last_of_tie)
    if len(valid) == 0:
        return float(np.nextafter(ranked[0], np.inf))
    return float(ranked[valid[-1]])


def selective_thresholds(
    probabilities: np.ndarray,
    label_ids: np.ndarray,
    target_precision: float,
    *,
    answerable: np.ndarray | None = None,
) -> dict[str, float]:
    """Thresholds under which a classifier should abstain (hand off) rather than answer.

    On validation probabilities (calibrated), pick the lowest top-1 `confidence` and the lowest
    top-1/top-2 `margin` at which the answered predictions reach `target_precision`; a
    prediction is answered when it clears both. Reports the precision and coverage (share
    answered) that this gives on the same data, counting as answered only the `answerable`
    (N,) ones where another check also decides (e.g. the unfamiliar one).
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    label_ids = np.asarray(label_ids)
    if len(label_ids) == 0:
        raise ValueError("no validation examples to choose thresholds on")
    ranked = np.sort(probabilities, axis=1)
    confidence = ranked[:, -1]  # (N,)
    margin = ranked[:, -1] - (ranked[:, -2] if probabilities.shape[1] > 1 else 0.0)  # (N,)
    correct = probabilities.argmax(axis=1) == label_ids  # (N,)
    thresholds = {
        "confidence": _lowest_threshold(confidence, correct, target_precision),
        "margin": _lowest_threshold(margin, correct, target_precision),
    }
    answered = (confidence >= thresholds["confidence"]) & (margin >= thresholds["margin"])
    if answerable is not None:
        answered &= np.asarray(answerable, dtype=bool)
    thresholds.update(
        target_precision=float(target_precision),
        precision=float(correct[answered].mean()) if answered.any() else 1.0,
        coverage=float(answered.mean()),
        n=len(label_ids),
    )
    return thresholds
