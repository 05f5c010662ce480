"""Metrics and calibration against hand-computed values."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.ml.evaluation import (
    calibrated_metrics,
    classification_metrics,
    evaluate_classifier,
    expected_calibration_error,
    fit_temperature,
    retrieval_metrics,
)
from core.ml.predictors import softmax
from core.ml.training import LabelledTexts


def one_hot_confidence(confidence: float, n: int) -> np.ndarray:
    """n two-class rows that put `confidence` on class 0."""
    return np.tile([confidence, 1.0 - confidence], (n, 1))


def test_ece_is_zero_when_confidence_matches_accuracy() -> None:
    # 80% of the rows that say 0.8 are right, 60% of those that say 0.6.
    probabilities = np.vstack([one_hot_confidence(0.8, 100), one_hot_confidence(0.6, 50)])
    labels = np.array([0] * 80 + [1] * 20 + [0] * 30 + [1] * 20)
    assert expected_calibration_error(probabilities, labels) == pytest.approx(0.0, abs=1e-12)


def test_ece_of_an_overconfident_model_is_its_confidence_gap() -> None:
    probabilities = one_hot_confidence(0.99, 100)
    labels = np.array([0] * 50 + [1] * 50)  # right half the time at 99% confidence
    assert expected_calibration_error(probabilities, labels) == pytest.approx(0.49)


def test_ece_weights_bins_by_their_share() -> None:
    # 3/4 of rows: confidence 0.9, all right (gap 0.1); 1/4: confidence 0.7, all wrong (gap 0.7).
    probabilities = np.vstack([one_hot_confidence(0.9, 30), one_hot_confidence(0.7, 10)])
    labels = np.array([0] * 30 + [1] * 10)
    assert expected_calibration_error(probabilities, labels) == pytest.approx(
        0.75 * 0.1 + 0.25 * 0.7
    )


def test_fit_temperature_recovers_the_temperature_that_generated_the_labels() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 3.0, size=(6000, 5))
    true_temperature = 2.5
    probabilities = softmax(logits / true_temperature)
    labels = np.array([rng.choice(5, p=row) for row in probabilities])
    assert fit_temperature(logits, labels) == pytest.approx(true_temperature, rel=0.08)


def test_fit_temperature_sharpens_an_underconfident_model() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(0.0, 1.0, size=(3000, 4))
    labels = np.array([rng.choice(4, p=row) for row in softmax(logits * 3.0)])
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(1 / 3, rel=0.1)


def test_classification_metrics_match_hand_computed_values() -> None:
    labels = ["a", "b", "c"]
    y_true = [0, 0, 1, 1, 2]
    y_pred = [0, 1, 1, 1, 0]
    probabilities = np.eye(3)[y_pred] * 0.7 + 0.1  # rows sum to 1, argmax = y_pred
    metrics = classification_metrics(y_true, probabilities, labels)

    assert metrics["accuracy"] == pytest.approx(0.6)
    # F1 per class: a 0.5 (P 1/2, R 1/2), b 0.8 (P 2/3, R 1), c 0.
    assert metrics["per_class"]["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert metrics["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert metrics["per_class"]["b"]["f1"] == pytest.approx(0.8)
    assert metrics["per_class"]["c"]["f1"] == 0.0
    assert metrics["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert metrics["weighted_f1"] == pytest.approx((2 * 0.5 + 2 * 0.8 + 0.0) / 5)
    assert metrics["confusion_matrix"] == {
        "labels": labels,
        "matrix": [[1, 1, 0], [0, 2, 0], [1, 0, 0]],
    }
    assert metrics["nll"] == pytest.approx(-(3 * np.log(0.8) + 2 * np.log(0.1)) / 5)
    json.dumps(metrics)  # stored with the run as JSON


def test_classification_metrics_reject_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="do not match"):
        classification_metrics([0, 1], np.ones((3, 2)) / 2, ["a", "b"])


def test_calibrated_metrics_report_temperature_and_both_eces() -> None:
    rng = np.random.default_rng(2)
    logits = rng.normal(0.0, 4.0, size=(2000, 3))
    labels = np.array([rng.choice(3, p=row) for row in softmax(logits / 2.0)])
    temperature, metrics = calibrated_metrics(logits, labels, ["x", "y", "z"])
    assert metrics["temperature"] == temperature == pytest.approx(2.0, rel=0.1)
    assert metrics["ece"] < metrics["ece_uncalibrated"]


class KeywordClassifier:
    """A predictor that says "refund" when it sees the word, "card" otherwise."""

    def __init__(self) -> None:
        self.labels = ["card", "refund"]

    def predict_proba(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        return np.array([[0.1, 0.9] if "refund" in text else [0.9, 0.1] for text in texts])


def test_evaluate_classifier_scores_any_predictor() -> None:
    data = LabelledTexts(
        ["refund please", "my card", "refund my card", "card lost"],
        ["refund", "card", "card", "card"],
    )
    metrics = evaluate_classifier(KeywordClassifier(), data)
    assert metrics["accuracy"] == pytest.approx(0.75)
    assert metrics["n"] == 4
    assert metrics["confusion_matrix"]["matrix"] == [[2, 1], [0, 1]]


def test_evaluate_classifier_names_labels_the_model_does_not_know() -> None:
    data = LabelledTexts(["hello"], ["greeting"])
    with pytest.raises(ValueError, match=r"\['greeting'\].*card, refund"):
        evaluate_classifier(KeywordClassifier(), data)


def test_retrieval_metrics_rank_the_paired_document() -> None:
    queries = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    documents = np.array([[1.0, 0.1], [1.0, 0.0], [1.0, 1.0]])
    # query 0 -> doc 1 scores higher than doc 0 (rank 2); query 1 -> doc 1 is last (rank 3).
    metrics = retrieval_metrics(queries, documents)
    assert metrics["accuracy@1"] == pytest.approx(1 / 3)
    assert metrics["mrr"] == pytest.approx((1 / 2 + 1 / 3 + 1) / 3)


def test_fit_temperature_stays_moderate_on_a_small_validation_set_with_no_errors() -> None:
    # 12 examples, all right, with soft logits: plain NLL minimisation would drive T to 0.
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 1.5, 0.0], [0.0, 0.0, 1.0]] * 4)
    labels = np.array([0, 1, 2] * 4)
    temperature = fit_temperature(logits, labels)
    assert 0.1 < temperature < 1.0  # sharper than before, not infinitely confident


def test_selective_thresholds_reach_the_target_precision() -> None:
    from core.ml.evaluation import selective_thresholds

    # Ten predictions, confident ones right, unsure ones mostly wrong.
    confidence = np.array([0.99, 0.97, 0.95, 0.9, 0.85, 0.8, 0.7, 0.65, 0.6, 0.55])
    right = np.array([1, 1, 1, 1, 1, 0, 1, 0, 0, 0], dtype=bool)
    probabilities = np.stack([confidence, 1 - confidence], axis=1)  # class 0 always predicted
    labels = np.where(right, 0, 1)
    chosen = selective_thresholds(probabilities, labels, target_precision=0.9)
    assert chosen["confidence"] == 0.85  # top five are all right; adding 0.8 drops to 5/6
    assert chosen["precision"] == 1.0 and chosen["coverage"] == 0.5
    lenient = selective_thresholds(probabilities, labels, target_precision=0.6)
    assert lenient["confidence"] == 0.55  # 6 right of all 10 still reaches 0.6
    assert lenient["coverage"] == 1.0
    # Another check (the unfamiliar one) also hands off the first two: reported as unanswered.
    gated = selective_thresholds(
        probabilities, labels, target_precision=0.9, answerable=np.arange(10) >= 2
    )
    assert gated["confidence"] == 0.85 and gated["coverage"] == 0.3


def test_selective_thresholds_abstain_on_everything_when_the_target_is_unreachable() -> None:
    from core.ml.evaluation import selective_thresholds

    probabilities = np.array([[0.9, 0.1], [0.8, 0.2]])
    chosen = selective_thresholds(probabilities, np.array([1, 1]), target_precision=0.9)
    assert chosen["confidence"] > 0.9 and chosen["coverage"] == 0.0
