"""Self-training: the first model's folder goes to the labeller, the second model trains on
the labelled examples plus what it returns, and only the final model's folder is left."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.ml.device import choose_placement
from core.ml.evaluation import evaluate_classifier
from core.ml.loading import load_classifier
from core.ml.training import LabelledTexts, TrainingResult
from core.ml.training.self_training import (
    PseudoLabeller,
    confident_labels,
    train_self_training,
)
from tests.core.ml.conftest import keyword_intents, quick

CPU = choose_placement("cpu", "float32")


def self_train(
    folder: Path, labeller: PseudoLabeller, output: Path, **options: Any
) -> TrainingResult:
    """`train_self_training` of the tiny BERT on CPU; `data` defaults to six examples per
    intent and the arguments to `quick()`."""
    data = options.pop("data", None) or keyword_intents(6, seed=1)
    arguments = options.pop("arguments", None) or quick()
    return train_self_training(
        folder,
        data,
        arguments,
        labeller,
        output_dir=output,
        base_reference="tiny-bert",
        placement=CPU,
        **options,
    )


def test_the_second_model_trains_on_the_examples_plus_what_the_first_one_labelled(
    tiny_bert_folder: Path, tmp_path: Path
) -> None:
    data = keyword_intents(6, seed=1)
    validation = keyword_intents(4, seed=2)
    unlabelled = keyword_intents(5, seed=3)
    output = tmp_path / "runs" / "model"
    seen: list[TrainingResult] = []
    reported: list[float] = []

    def labeller(first: TrainingResult) -> LabelledTexts:
        seen.append(first)
        assert first.output_dir != output and load_classifier(first.output_dir, CPU).labels
        return unlabelled  # the caller decides what to keep; here, all of it

    result = self_train(
        tiny_bert_folder,
        labeller,
        output,
        data=data,
        progress=lambda fraction, _: reported.append(fraction),
        validation=validation,
    )

    first = seen[0]
    assert first.metrics["n_train"] == len(data) == 24
    assert result.metrics["n_train"] == len(data) + len(unlabelled) == 44
    # Both models are scored on the same real held-out examples.
    assert result.metrics["n_validation"] == first.metrics["n_validation"] == len(validation)
    assert result.metrics["self_training"] == {
        "rounds": 1,
        "pseudo_labelled": 20,
        "first_model": {key: first.metrics[key] for key in ("accuracy", "macro_f1",
                                                             "weighted_f1", "ece")},
    }  # fmt: skip
    assert result.output_dir == output
    assert [path.name for path in output.parent.iterdir()] == ["model"]  # the first is gone
    again = evaluate_classifier(load_classifier(output, CPU), validation)
    assert again["accuracy"] == result.metrics["accuracy"]
    assert reported[0] == 0.0 and reported[-1] == 1.0 and reported == sorted(reported)


@pytest.mark.parametrize("second_round", ["more", "nothing"])
def test_each_round_labels_with_the_model_the_round_before_trained(
    tiny_bert_folder: Path, tmp_path: Path, second_round: str
) -> None:
    data, unlabelled = keyword_intents(6, seed=1), keyword_intents(5, seed=3)
    seen: list[TrainingResult] = []

    def labeller(latest: TrainingResult) -> LabelledTexts:
        seen.append(latest)
        if len(seen) == 1:
            return unlabelled.subset(range(10))
        return unlabelled if second_round == "more" else LabelledTexts([], [])

    output = tmp_path / "model"
    result = self_train(
        tiny_bert_folder,
        labeller,
        output,
        data=data,
        rounds=2,
        validation=keyword_intents(4, seed=2),
    )
    assert [model.metrics["n_train"] for model in seen] == [24, 34]  # round 1's model labels
    if second_round == "more":
        assert result.metrics["n_train"] == 44
        assert result.metrics["self_training"]["rounds"] == 2
        assert result.metrics["self_training"]["pseudo_labelled"] == 20
    else:  # round 2 added nothing: round 1's model is the result
        assert result.metrics["n_train"] == 34
        assert result.metrics["self_training"]["rounds"] == 1
        assert result.metrics["self_training"]["pseudo_labelled"] == 10
    assert result.output_dir == output and [p.name for p in tmp_path.iterdir()] == ["model"]
    assert load_classifier(output, CPU).labels == data.label_names


def test_with_nothing_labelled_the_first_model_is_the_result(
    tiny_bert_folder: Path, tmp_path: Path
) -> None:
    validation = keyword_intents(4, seed=2)
    output = tmp_path / "model"
    result = self_train(
        tiny_bert_folder, lambda first: LabelledTexts([], []), output, validation=validation
    )
    assert result.output_dir == output and result.metrics["self_training"]["pseudo_labelled"] == 0
    assert result.metrics["self_training"]["rounds"] == 0
    assert result.metrics["self_training"]["first_model"]["accuracy"] == result.metrics["accuracy"]
    assert [path.name for path in tmp_path.iterdir()] == ["model"]
    again = evaluate_classifier(load_classifier(output, CPU), validation)
    assert again["nll"] == pytest.approx(result.metrics["nll"], abs=1e-6)


def test_a_failing_labeller_leaves_no_folder_behind(tiny_bert_folder: Path, tmp_path: Path) -> None:
    def labeller(first: TrainingResult) -> LabelledTexts:
        raise RuntimeError("the database went away")

    with pytest.raises(RuntimeError, match="database went away"):
        self_train(
            tiny_bert_folder,
            labeller,
            tmp_path / "model",
            # no validation given: held out of the examples
            arguments=quick(validation_fraction=0.25),
        )
    assert list(tmp_path.iterdir()) == []


class _Fixed:
    def __init__(self, probabilities: list[list[float]]) -> None:
        self.labels = ["billing", "delivery", "refund"]
        self.probabilities = np.array(probabilities)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return self.probabilities[: len(texts)]


def test_confident_labels_keep_the_texts_whose_top_class_reaches_the_level() -> None:
    classifier = _Fixed([[0.2, 0.7, 0.1], [0.4, 0.3, 0.3], [0.05, 0.05, 0.9], [0.5, 0.5, 0.0]])
    kept = confident_labels(classifier, ["a", "b", "c", "d"], 0.5)
    assert list(zip(kept.texts, kept.labels, strict=True)) == [
        ("a", "delivery"),
        ("c", "refund"),
        ("d", "billing"),  # a tie goes to the first class, as argmax does
    ]
    assert len(confident_labels(classifier, [], 0.5)) == 0
    with pytest.raises(ValueError, match=r"min_confidence must be in \(0, 1\]"):
        confident_labels(classifier, ["a"], 0.0)
