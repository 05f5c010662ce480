"""Does an export still predict what its torch model predicts? Measure it on a sample.

The spec allows the ONNX path only within 1 point of fp32 accuracy. With labelled texts that
is measured directly: accuracy of both classifiers, or of one linear probe fitted on the
reference embeddings and fed each encoder's embeddings. Without labels, classifiers compare
top-1 predictions (disagreements bound the accuracy change) and encoders compare cosine.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.ml.loading import load_classifier, load_encoder
from core.ml.onnx.export import cpu_fp32
from core.ml.onnx.manifest import OnnxManifest, Precision
from core.ml.onnx.runtime import OnnxClassifier, OnnxEncoder

MIN_COSINE = 0.99  # below this, embeddings have visibly moved (int8 MiniLM: 0.993)


@dataclass(frozen=True)
class Agreement:
    """How closely a candidate model (ONNX) follows a reference (torch) on `samples` texts.

    `top1`: share of texts with the same predicted class (classifiers) or the same nearest
    neighbour within the sample (encoders). Cosines are between embeddings (encoders only).
    Accuracies are set when labels were given.
    """

    task: str  # "classification" or "embedding"
    samples: int
    top1: float
    max_abs_diff: float
    mean_cosine: float | None = None
    min_cosine: float | None = None
    reference_accuracy: float | None = None
    candidate_accuracy: float | None = None

    @property
    def accuracy_drop(self) -> float | None:
        """Reference minus candidate accuracy (0.01 = 1 point); None without labels."""
        if self.reference_accuracy is None or self.candidate_accuracy is None:
            return None
        return self.reference_accuracy - self.candidate_accuracy

    def acceptable(self, max_drop: float = 0.01, min_cosine: float = MIN_COSINE) -> bool:
        """Whether the candidate may replace the reference: within `max_drop` of its accuracy."""
        drop = self.accuracy_drop
        if drop is not None:
            return drop <= max_drop
        if self.task == "classification":
            return 1.0 - self.top1 <= max_drop
        return self.mean_cosine is not None and self.mean_cosine >= min_cosine

    def summary(self) -> str:
        parts = [f"{self.task} on {self.samples} texts", f"top-1 agreement {self.top1:.4f}"]
        if self.mean_cosine is not None:
            parts.append(f"cosine mean {self.mean_cosine:.5f} min {self.min_cosine:.5f}")
        if self.accuracy_drop is not None:
            parts.append(
                f"accuracy {self.reference_accuracy:.4f} -> {self.candidate_accuracy:.4f} "
                f"({-100 * self.accuracy_drop:+.2f} points)"
            )
        return ", ".join(parts)


def compare_predictors(
    reference: Any,
    candidate: Any,
    texts: Sequence[str],
    *,
    gold: Sequence[str] | None = None,
    batch_size: int = 32,
) -> Agreement:
    """Agreement of two encoders (`encode`) or two classifiers (`predict_proba`) on `texts`.

    `gold`, one label per text, adds accuracies: the classifiers' own, or for encoders a
    logistic-regression probe fitted on the reference embeddings (two folds, each half scored
    by a probe fitted on the other half) applied to both sets of embeddings.
    """
    if gold is not None and len(gold) != len(texts):
        raise ValueError(f"{len(gold)} labels given for {len(texts)} texts")
    if hasattr(reference, "encode") and hasattr(candidate, "encode"):
        return _compare_encoders(reference, candidate, texts, gold, batch_size)
    if hasattr(reference, "predict_proba") and hasattr(candidate, "predict_proba"):
        return _compare_classifiers(reference, candidate, texts, gold, batch_size)
    raise TypeError(
        f"cannot compare a {type(reference).__name__} with a {type(candidate).__name__}: "
        "expected two encoders (encode) or two classifiers (predict_proba)"
    )


def verify_export(
    folder: Path,
    onnx_dir: Path,
    texts: Sequence[str],
    *,
    gold: Sequence[str] | None = None,
    precision: Precision | None = None,
    resolve_base: Callable[[str], Path] | None = None,
) -> Agreement:
    """Compare an export with the torch model it came from (CPU, fp32) on `texts`.

    Use `.acceptable()` on the result to refuse an int8 model that loses more than a point.
    """
    manifest = OnnxManifest.read(onnx_dir)
    if manifest.graph_output == "logits" or manifest.head:
        reference: Any = load_classifier(folder, cpu_fp32(), resolve_base)
        candidate: Any = OnnxClassifier.load(onnx_dir, precision=precision)
    else:
        reference = load_encoder(folder, cpu_fp32())
        candidate = OnnxEncoder.load(onnx_dir, precision=precision)
    return compare_predictors(reference, candidate, texts, gold=gold)


def _compare_encoders(
    reference: Any, candidate: Any, texts: Sequence[str], gold: Sequence[str] | None, batch: int
) -> Agreement:
    expected = reference.encode(texts, batch_size=batch).astype(np.float64)  # (N, D)
    actual = candidate.encode(texts, batch_size=batch).astype(np.float64)  # (N, D)
    cosine = (_unit(expected) * _unit(actual)).sum(axis=1)  # (N,)
    accuracies = _probe_accuracies(expected, actual, gold) if gold is not None else (None, None)
    return Agreement(
        task="embedding",
        samples=len(texts),
        top1=float((_nearest(expected) == _nearest(actual)).mean()),
        max_abs_diff=float(np.abs(expected - actual).max()),
        mean_cosine=float(cosine.mean()),
        min_cosine=float(cosine.min()),
        reference_accuracy=accuracies[0],
        candidate_accuracy=accuracies[1],
    )


def _compare_classifiers(
    reference: Any, candidate: Any, texts: Sequence[str], gold: Sequence[str] | None, batch: int
) -> Agreement:
    if list(reference.labels) != list(candidate.labels):
        raise ValueError(f"labels differ: {reference.labels} vs {candidate.labels}")
    expected = reference.predict_proba(texts, batch_size=batch)  # (N, C)
    actual = candidate.predict_proba(texts, batch_size=batch)  # (N, C)
    accuracies: tuple[float | None, float | None] = (None, None)
    if gold is not None:
        labels = np.array(reference.labels)
        truth = np.array(gold)
        accuracies = (
            float((labels[expected.argmax(axis=1)] == truth).mean()),
            float((labels[actual.argmax(axis=1)] == truth).mean()),
        )
    return Agreement(
        task="classification",
        samples=len(texts),
        top1=float((expected.argmax(axis=1) == actual.argmax(axis=1)).mean()),
        max_abs_diff=float(np.abs(expected - actual).max()),
        reference_accuracy=accuracies[0],
        candidate_accuracy=accuracies[1],
    )


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)


def _nearest(vectors: np.ndarray) -> np.ndarray:
    """Each row's nearest other row by cosine, (N,); a single row is its own neighbour."""
    if len(vectors) < 2:
        return np.zeros(len(vectors), dtype=np.int64)
    unit = _unit(vectors)
    similarity = unit @ unit.T  # (N, N)
    np.fill_diagonal(similarity, -np.inf)
    return similarity.argmax(axis=1)


def _probe_accuracies(
    reference: np.ndarray, candidate: np.ndarray, gold: Sequence[str]
) -> tuple[float, float]:
    """Accuracy of a linear probe (fitted on reference embeddings) on each set of embeddings."""
    from sklearn.linear_model import LogisticRegression

    truth = np.array(gold)
    halves = [np.arange(len(truth))[0::2], np.arange(len(truth))[1::2]]
    right = np.zeros(2)
    for train, test in (halves, halves[::-1]):
        if len(set(truth[train])) < 2:
            raise ValueError("a linear probe needs at least two labels in each half of the sample")
        with warnings.catch_warnings():
            # Few examples per class is normal for a sample; sklearn warns about it.
            warnings.simplefilter("ignore", UserWarning)
            # Weak regularisation: unit-length embeddings need large weights to separate.
            probe = LogisticRegression(C=10.0, max_iter=2000).fit(reference[train], truth[train])
        right += [
            (probe.predict(reference[test]) == truth[test]).sum(),
            (probe.predict(candidate[test]) == truth[test]).sum(),
        ]
    return float(right[0] / len(truth)), float(right[1] / len(truth))
