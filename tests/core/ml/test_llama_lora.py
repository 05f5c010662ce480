"""LoRA classification on a real Llama-architecture model: SmolLM2-135M-Instruct."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.ml.artifacts import ArtifactInfo
from core.ml.device import choose_placement
from core.ml.loading import load_classifier
from core.ml.training import TrainingArguments, choose_strategy
from core.ml.training.classification import fit_sequence_classifier
from tests.core.ml.conftest import keyword_intents

CPU = choose_placement("cpu", "float32")  # fp32 whatever the CPU: outputs are compared closely


@pytest.mark.slow
def test_smollm2_lora_classifies_and_reloads_to_identical_logits(
    smollm2_folder_path: Path, tmp_path: Path
) -> None:
    train = keyword_intents(12, seed=21, classes=3)
    validation = keyword_intents(4, seed=22, classes=3)
    # A high rate so that a 20-step run on a CPU learns the intents.
    args = TrainingArguments(epochs=4, batch_size=8, max_length=24, learning_rate=3e-3)
    assert choose_strategy(smollm2_folder_path, train, args) == "lora"

    trained = fit_sequence_classifier(
        smollm2_folder_path,
        train,
        validation,
        args,
        lora=True,
        scratch_beside=tmp_path / "adapter",
        placement=CPU,
    )
    predictor = trained.predictor(CPU)
    expected = predictor.logits(predictor.tokenize(validation.texts))
    trained.save(tmp_path / "adapter", "smollm2")

    info = ArtifactInfo.read(tmp_path / "adapter")
    assert info is not None and info.adapter and info.base_model == "smollm2"
    # The adapter folder is small: LoRA matrices and the head, not the 135M base weights.
    weights = (tmp_path / "adapter" / "adapter_model.safetensors").stat().st_size
    assert weights < 20_000_000
    reloaded = load_classifier(
        tmp_path / "adapter", CPU, resolve_base=lambda reference: smollm2_folder_path
    )
    logits = reloaded.logits(reloaded.tokenize(validation.texts))
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)

    probabilities = reloaded.predict_proba(validation.texts)
    predicted = [reloaded.labels[i] for i in probabilities.argmax(axis=1)]
    accuracy = np.mean([p == t for p, t in zip(predicted, validation.labels, strict=True)])
    assert accuracy >= 0.75  # chance: 1/3
    assert trained.metrics["accuracy"] == pytest.approx(accuracy)
