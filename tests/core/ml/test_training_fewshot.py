"""Few-shot (SetFit-style) training: pair generation and head (fast), the whole path on a tiny
random encoder (fast), and quality with the real MiniLM from 8 examples per intent (slow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file
from sklearn.linear_model import LogisticRegression

from core.ml.artifacts import HEAD_FILE, ArtifactInfo
from core.ml.device import choose_placement
from core.ml.evaluation import evaluate_classifier
from core.ml.loading import load_classifier
from core.ml.predictors import EncoderHeadClassifier, softmax
from core.ml.training import (
    LabelledTexts,
    TrainingArguments,
    stratified_split,
    train_classifier,
)
from core.ml.training.fewshot import contrastive_pairs, fit_head
from tests.core.ml.conftest import keyword_intents

CPU = choose_placement("cpu", "float32")  # fp32 whatever the CPU: outputs are compared closely


def test_contrastive_pairs_pair_same_labels_as_positives_and_others_as_negatives() -> None:
    data = LabelledTexts(["a1", "a2", "a3", "b1", "b2", "c1"], ["a", "a", "a", "b", "b", "c"])
    label_of = dict(zip(data.texts, data.labels, strict=True))
    pairs, scores = contrastive_pairs(data, per_example=5, seed=0)

    # 5 rounds x (5 positives, "c1" has no partner, + 6 negatives)
    assert scores.count(1.0) == 25 and scores.count(0.0) == 30
    for (first, second), score in zip(pairs, scores, strict=True):
        assert first != second
        assert (label_of[first] == label_of[second]) == (score == 1.0)
    assert contrastive_pairs(data, 5, seed=0) == (pairs, scores)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_head_reproduces_the_logistic_regression(n_classes: int) -> None:
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(60, 8))
    label_ids = rng.integers(0, n_classes, size=60)
    weight, bias = fit_head(embeddings, label_ids, n_classes, TrainingArguments())
    assert weight.shape == (n_classes, 8) and bias.shape == (n_classes,)
    reference = LogisticRegression(max_iter=2000, random_state=42).fit(embeddings, label_ids)
    np.testing.assert_allclose(
        softmax(embeddings @ weight.T + bias), reference.predict_proba(embeddings), atol=1e-5
    )


def test_fewshot_on_a_tiny_encoder_saves_an_encoder_head_folder(
    tiny_bert_folder: Path, tmp_path: Path
) -> None:
    data = keyword_intents(8, seed=3)
    reported: list[float] = []
    result = train_classifier(
        tiny_bert_folder,
        data,
        TrainingArguments(strategy="fewshot", fewshot_pairs_per_example=2, max_length=32),
        output_dir=tmp_path / "fewshot",
        base_reference="tiny-bert",
        placement=CPU,
        progress=lambda fraction, _: reported.append(fraction),
    )

    assert result.architecture == "encoder-head"
    assert result.metrics["strategy"] == "fewshot" == result.params["strategy"]
    assert result.metrics["n_train"] == 24 and result.metrics["n_validation"] == 8
    assert {"accuracy", "macro_f1", "ece", "temperature", "confusion_matrix"} <= set(result.metrics)
    assert reported[-1] == 1.0 and reported == sorted(reported)
    info = ArtifactInfo.read(tmp_path / "fewshot")
    assert info is not None and info.architecture == "encoder-head"
    assert info.labels == result.labels and info.base_model == "tiny-bert"
    head = load_file(tmp_path / "fewshot" / HEAD_FILE)
    assert head["weight"].shape == (4, 32) and head["bias"].shape == (4,)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no checkpoints left

    reloaded = load_classifier(tmp_path / "fewshot", CPU)
    assert isinstance(reloaded, EncoderHeadClassifier)
    _, validation = stratified_split(data, 0.2, seed=42)  # the split the run made
    again = evaluate_classifier(reloaded, validation)
    assert again["nll"] == pytest.approx(result.metrics["nll"], abs=1e-5)


@pytest.mark.slow
def test_minilm_fewshot_from_8_examples_per_intent(
    minilm_folder_path: Path, tmp_path: Path
) -> None:
    train = keyword_intents(8, seed=11)
    held_out = keyword_intents(10, seed=12)
    result = train_classifier(
        minilm_folder_path,
        train,
        TrainingArguments(strategy="fewshot", fewshot_pairs_per_example=8, max_length=32),
        output_dir=tmp_path / "m",
        base_reference="minilm",
        placement=CPU,
        validation=held_out,
    )
    assert result.metrics["n_train"] == 32
    assert result.metrics["accuracy"] >= 0.8  # chance: 0.25
    reloaded = load_classifier(tmp_path / "m", CPU)
    assert evaluate_classifier(reloaded, held_out)["accuracy"] == result.metrics["accuracy"]
