"""Sequence classification training: tiny random models for the mechanics (fast), the real
MiniLM for quality (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from core.ml.artifacts import ArtifactInfo
from core.ml.device import choose_placement
from core.ml.evaluation import evaluate_classifier
from core.ml.loading import load_classifier
from core.ml.training import (
    LabelledTexts,
    LoraArguments,
    TrainingArguments,
    choose_strategy,
    data_fingerprint,
    run_fingerprint,
    sentence_head,
    stratified_split,
    train_classifier,
)
from core.ml.training.classification import fit_sequence_classifier
from core.ml.training.sequence_models import ClassificationTrainer, load_model
from tests.core.ml.conftest import keyword_intents, quick

CPU = choose_placement("cpu", "float32")  # fp32 whatever the CPU: outputs are compared closely
METRIC_KEYS = {
    "accuracy",
    "macro_f1",
    "weighted_f1",
    "ece",
    "per_class",
    "confusion_matrix",
    "temperature",
    "n_train",
    "n_validation",
    "train_seconds",
    "strategy",
    "train_loss",
}


def same_folder(reference: str) -> Path:
    return Path(reference)


# --- data -------------------------------------------------------------------------------------


def test_stratified_split_holds_out_every_class_that_can_spare_one() -> None:
    data = LabelledTexts([f"t{i}" for i in range(23)], ["a"] * 10 + ["b"] * 10 + ["c"] * 2 + ["d"])
    train, validation = stratified_split(data, 0.2, seed=3)
    assert validation.counts() == {"a": 2, "b": 2, "c": 1}
    assert train.counts() == {"a": 8, "b": 8, "c": 1, "d": 1}
    assert sorted(train.texts + validation.texts) == sorted(data.texts)
    again, _ = stratified_split(data, 0.2, seed=3)
    assert again.texts == train.texts


def test_data_fingerprint_ignores_order_and_spacing_but_not_content() -> None:
    data = LabelledTexts(["hello  world", "bye"], ["greet", "leave"])
    shuffled = LabelledTexts(["bye", " hello world "], ["leave", "greet"])
    relabelled = LabelledTexts(["hello world", "bye"], ["greet", "greet"])
    assert data_fingerprint(data) == data_fingerprint(shuffled)
    assert data_fingerprint(data) != data_fingerprint(relabelled)
    assert data_fingerprint(data) != data_fingerprint([("hello world", "greet"), ("bye", "leave")])
    assert len(data_fingerprint(data)) == 64


def test_a_runs_fingerprint_covers_its_held_out_examples_and_unlabelled_texts() -> None:
    train = LabelledTexts(["hello world", "bye"], ["greet", "leave"])
    held_out = LabelledTexts(["hi there"], ["greet"])
    run = run_fingerprint(train, held_out, ["what time is it"])
    # Training examples alone: the data's own fingerprint (what runs recorded before).
    assert (
        run_fingerprint(train)
        == run_fingerprint(train, LabelledTexts([], []))
        == (data_fingerprint(train))
    )
    assert run_fingerprint(train, held_out) not in {run, data_fingerprint(train)}
    assert run != run_fingerprint(
        train, LabelledTexts(["hi there"], ["leave"]), ["what time is it"]
    )
    assert run != run_fingerprint(train, held_out, ["what time is it", "are you open"])
    assert run == run_fingerprint(
        LabelledTexts(["bye", "hello  world"], ["leave", "greet"]), held_out, [" what time is it"]
    )
    # An example moved from training to held-out is another run's data.
    moved = run_fingerprint(
        LabelledTexts(["bye"], ["leave"]), LabelledTexts(["hi there", "hello world"], ["greet"] * 2)
    )
    assert moved != run_fingerprint(
        LabelledTexts(["bye", "hello world"], ["leave", "greet"]), held_out
    )


def test_labelled_texts_join_in_order() -> None:
    first = LabelledTexts(["late parcel", "refund please"], ["delivery", "refund"])
    second = LabelledTexts(["card declined"], ["billing"])
    joined = LabelledTexts.joined(first, second)
    assert joined.texts == ["late parcel", "refund please", "card declined"]
    assert joined.labels == ["delivery", "refund", "billing"]
    assert len(LabelledTexts.joined()) == 0


def test_labelled_texts_read_csv_and_jsonl(tmp_path: Path) -> None:
    csv_file = tmp_path / "data.csv"
    csv_file.write_text('text,category\n"hi, there",greet\nbye,leave\n')
    from_csv = LabelledTexts.from_csv(csv_file, "text", "category")
    assert from_csv.texts == ["hi, there", "bye"]
    assert from_csv.labels == ["greet", "leave"]
    jsonl_file = tmp_path / "data.jsonl"
    jsonl_file.write_text('{"text": "hi", "label": "greet"}\n\n{"text": "bye", "label": 2}\n')
    assert LabelledTexts.from_jsonl(jsonl_file).labels == ["greet", "2"]
    with pytest.raises(ValueError, match="no column"):
        LabelledTexts.from_csv(csv_file, "text", "label")


# --- strategy ---------------------------------------------------------------------------------


def test_auto_strategy_follows_the_architecture(
    tiny_bert_folder: Path, tiny_llama_folder: Path, minilm_folder_path: Path
) -> None:
    auto = TrainingArguments()
    assert choose_strategy(minilm_folder_path, keyword_intents(8), auto) == "sentence"
    assert choose_strategy(minilm_folder_path, keyword_intents(200), auto) == "sentence"
    assert choose_strategy(tiny_bert_folder, keyword_intents(8), auto) == "full"  # no pooling
    assert choose_strategy(tiny_llama_folder, keyword_intents(8), auto) == "lora"
    explicit = TrainingArguments(strategy="lora")
    assert choose_strategy(tiny_bert_folder, keyword_intents(8), explicit) == "lora"


def test_unknown_strategy_or_metric_is_refused_with_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="auto, full, lora, fewshot"):
        TrainingArguments(strategy="magic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="macro_f1, accuracy"):
        TrainingArguments(metric_for_best_model="f2")


def test_arguments_survive_a_json_round_trip() -> None:
    args = TrainingArguments(strategy="lora", lora=LoraArguments(r=4), dropout=0.2)
    again = TrainingArguments(**json.loads(json.dumps(args.to_dict())))
    assert again == args and isinstance(again.lora, LoraArguments)


# --- full fine-tuning -------------------------------------------------------------------------


def test_full_fine_tune_saves_a_folder_that_reloads_to_the_same_probabilities(
    tiny_bert_folder: Path, tmp_path: Path
) -> None:
    data = keyword_intents(12, seed=1)
    validation = keyword_intents(4, seed=2)
    output = tmp_path / "runs" / "intent-model"
    reported: list[tuple[float, str | None]] = []

    result = train_classifier(
        tiny_bert_folder,
        data,
        quick(),
        output_dir=output,
        base_reference="tiny-bert",
        placement=CPU,
        progress=lambda fraction, message: reported.append((fraction, message)),
        validation=validation,
    )

    assert result.architecture == "sequence-classification"
    assert result.labels == sorted(set(data.labels))
    assert set(result.metrics) >= METRIC_KEYS
    assert result.metrics["n_train"] == 48 and result.metrics["n_validation"] == 16
    assert result.primary_metric == "macro_f1" and result.primary_metric in result.metrics
    assert result.params["strategy"] == "full" and result.params["learning_rate"] == 1e-3
    json.dumps(result.metrics), json.dumps(result.params)
    # Only the model is kept: no Trainer checkpoints in or beside the folder.
    assert [path.name for path in output.parent.iterdir()] == ["intent-model"]
    assert not any(path.name.startswith("checkpoint") for path in output.iterdir())
    info = ArtifactInfo.read(output)
    assert info is not None and info.base_model == "tiny-bert" and not info.adapter
    assert info.temperature == pytest.approx(result.metrics["temperature"])
    # Progress runs from 0 to 1 without going back.
    fractions = [fraction for fraction, _ in reported]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)

    reloaded = load_classifier(output, CPU)
    again = evaluate_classifier(reloaded, validation)
    # Same calibrated probabilities as the ones the metrics were computed from.
    assert again["nll"] == pytest.approx(result.metrics["nll"], abs=1e-6)
    assert again["accuracy"] == result.metrics["accuracy"]


def test_in_memory_and_reloaded_models_agree(tiny_bert_folder: Path, tmp_path: Path) -> None:
    train, validation = stratified_split(keyword_intents(10), 0.25, seed=0)
    trained = fit_sequence_classifier(
        tiny_bert_folder,
        train,
        validation,
        quick(),
        lora=False,
        scratch_beside=tmp_path / "m",
        placement=CPU,
    )
    texts = [*validation.texts, "an unseen sentence about nothing"]
    expected = trained.predictor(CPU).predict_proba(texts)
    trained.save(tmp_path / "m", "tiny-bert")
    np.testing.assert_allclose(
        load_classifier(tmp_path / "m", CPU).predict_proba(texts), expected, atol=1e-6
    )


def test_early_stopping_stops_when_the_metric_stops_improving(
    tiny_bert_folder: Path, tmp_path: Path
) -> None:
    # With a learning rate of 0 the validation metric can never improve after epoch 1.
    result = train_classifier(
        tiny_bert_folder,
        keyword_intents(10),
        quick(epochs=20, learning_rate=0.0, early_stopping_patience=2),
        output_dir=tmp_path / "m",
        base_reference="tiny-bert",
        placement=CPU,
    )
    assert result.metrics["stopped_early"] is True
    assert result.metrics["epochs"] == pytest.approx(3.0)  # 1 + patience
    steps_per_epoch = result.metrics["steps"] // 3
    assert result.metrics["best_step"] == steps_per_epoch


def test_gradient_accumulation_makes_fewer_optimizer_steps(
    tiny_bert_folder: Path, tmp_path: Path
) -> None:
    data = keyword_intents(8)  # 32 examples, all for training
    args = quick(epochs=1, validation_fraction=0.0, gradient_accumulation_steps=2)
    result = train_classifier(
        tiny_bert_folder, data, args, output_dir=tmp_path / "m", base_reference="b", placement=CPU
    )
    assert result.metrics["steps"] == 2  # 32 / (8 x 2)
    assert result.metrics["n_validation"] == 0 and "accuracy" not in result.metrics
    assert ArtifactInfo.read(tmp_path / "m").temperature == 1.0  # type: ignore[union-attr]


def test_class_weights_weight_the_cross_entropy(tiny_bert_folder: Path) -> None:
    weights = torch.tensor([1.0, 3.0])
    inputs = {"input_ids": torch.tensor([[101, 2000, 102], [101, 3000, 102], [101, 4000, 102]])}
    labels = torch.tensor([0, 1, 1])
    model = load_model(tiny_bert_folder, ["a", "b"], quick(), pad_token_id=0).eval()

    def loss(class_weights: torch.Tensor | None) -> torch.Tensor:
        trainer = object.__new__(ClassificationTrainer)  # compute_loss needs no Trainer state
        trainer.class_weights = class_weights
        return trainer.compute_loss(model, {**inputs, "labels": labels})

    with torch.no_grad():
        logits = model(**inputs).logits
        expected = torch.nn.functional.cross_entropy(logits, labels, weight=weights)
        assert loss(weights) == pytest.approx(expected.item(), rel=1e-6)
        assert loss(None) == pytest.approx(
            torch.nn.functional.cross_entropy(logits, labels).item(), rel=1e-6
        )
        assert loss(weights) != pytest.approx(loss(None).item(), rel=1e-3)


def test_class_weights_change_the_training_loss(tiny_bert_folder: Path, tmp_path: Path) -> None:
    imbalanced = keyword_intents(24, classes=2)
    imbalanced = imbalanced.subset(list(range(24)) + list(range(24, 30)))  # 24 vs 6
    losses = {}
    for weighted in (False, True):
        result = train_classifier(
            tiny_bert_folder,
            imbalanced,
            quick(epochs=1, class_weights=weighted),
            output_dir=tmp_path / f"m{weighted}",
            base_reference="b",
            placement=CPU,
        )
        losses[weighted] = result.metrics["train_loss"]
        assert result.params["class_weights"] is weighted
    assert losses[True] != pytest.approx(losses[False], rel=1e-4)


def test_dropout_setting_reaches_the_model_config(tiny_bert_folder: Path) -> None:
    model = load_model(tiny_bert_folder, ["a", "b"], quick(dropout=0.3), pad_token_id=0)
    assert model.config.hidden_dropout_prob == 0.3
    assert model.config.attention_probs_dropout_prob == 0.3
    assert model.config.id2label == {0: "a", 1: "b"}


# --- LoRA -------------------------------------------------------------------------------------


@pytest.mark.parametrize("base", ["tiny_bert_folder", "tiny_llama_folder", "tiny_mpnet_folder"])
def test_lora_adapter_reloads_to_identical_logits_head_included(
    base: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    folder: Path = request.getfixturevalue(base)
    train, validation = stratified_split(keyword_intents(10, classes=3), 0.3, seed=0)
    args = quick(strategy="lora", epochs=2, lora=LoraArguments(r=4, alpha=8))
    trained = fit_sequence_classifier(
        folder, train, validation, args, lora=True, scratch_beside=tmp_path / "m", placement=CPU
    )
    texts = [*validation.texts, "something else entirely"]
    predictor = trained.predictor(CPU)
    expected = predictor.logits(predictor.tokenize(texts))
    trained.save(tmp_path / "m", str(folder))

    saved = sorted(path.name for path in (tmp_path / "m").iterdir())
    assert "adapter_model.safetensors" in saved and "model.safetensors" not in saved
    info = ArtifactInfo.read(tmp_path / "m")
    assert info is not None and info.adapter and info.base_model == str(folder)

    reloaded = load_classifier(tmp_path / "m", CPU, resolve_base=same_folder)
    logits = reloaded.logits(reloaded.tokenize(texts))
    # A head re-initialised on load (not in modules_to_save) would differ by far more.
    np.testing.assert_allclose(logits, expected, atol=1e-5)
    assert np.ptp(expected) > 1e-3


def test_lora_on_a_decoder_pads_with_eos(tiny_llama_folder: Path, tmp_path: Path) -> None:
    result = train_classifier(
        tiny_llama_folder,
        keyword_intents(6, classes=2),
        quick(strategy="auto", epochs=1, validation_fraction=0.0),
        output_dir=tmp_path / "m",
        base_reference=str(tiny_llama_folder),
        placement=CPU,
    )
    assert result.params["strategy"] == "lora"
    reloaded = load_classifier(tmp_path / "m", CPU, resolve_base=same_folder)
    assert reloaded.tokenizer.pad_token == reloaded.tokenizer.eos_token == "[SEP]"
    assert reloaded.model.config.pad_token_id == reloaded.tokenizer.eos_token_id


# --- real model -------------------------------------------------------------------------------


@pytest.mark.slow
def test_minilm_full_fine_tune_learns_intents(minilm_folder_path: Path, tmp_path: Path) -> None:
    data = keyword_intents(20, seed=5)
    validation = keyword_intents(8, seed=6)
    result = train_classifier(
        minilm_folder_path,
        data,
        TrainingArguments(strategy="full", epochs=3, batch_size=16, max_length=32),
        output_dir=tmp_path / "m",
        base_reference="minilm",
        placement=CPU,
        validation=validation,
    )
    assert result.metrics["accuracy"] >= 0.8  # chance: 0.25
    reloaded = load_classifier(tmp_path / "m", CPU)
    assert evaluate_classifier(reloaded, validation)["accuracy"] == result.metrics["accuracy"]


def test_sentence_head_saves_an_encoder_head_that_reloads_to_the_same_probabilities(
    tiny_bert_folder: Path, tmp_path: Path
) -> None:
    data = keyword_intents(12, seed=1)
    validation = keyword_intents(4, seed=2)
    output = tmp_path / "sentence-model"
    result = train_classifier(
        tiny_bert_folder,
        data,
        quick(strategy="sentence"),
        output_dir=output,
        base_reference="tiny-bert",
        placement=CPU,
        validation=validation,
    )
    assert result.architecture == "encoder-head"
    assert set(result.metrics) >= METRIC_KEYS
    assert result.params["strategy"] == "sentence"
    assert [path.name for path in output.parent.iterdir()] == ["sentence-model"]
    reloaded = load_classifier(output, CPU)
    again = evaluate_classifier(reloaded, validation)
    assert again["nll"] == pytest.approx(result.metrics["nll"], abs=1e-5)
    assert again["accuracy"] == result.metrics["accuracy"]


def test_a_bf16_placement_trains_under_autocast_and_saves_fp32_weights(
    tiny_bert_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    autocast_dtypes: list[torch.dtype | None] = []
    forward = sentence_head.SentenceClassifier.forward

    def recording_forward(self: torch.nn.Module, *args: object, **kwargs: object) -> object:
        enabled = torch.is_autocast_enabled("cpu")
        autocast_dtypes.append(torch.get_autocast_dtype("cpu") if enabled else None)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(sentence_head.SentenceClassifier, "forward", recording_forward)
    output = tmp_path / "m"
    train_classifier(
        tiny_bert_folder,
        keyword_intents(12, seed=1),
        quick(strategy="sentence"),
        output_dir=output,
        base_reference="tiny-bert",
        placement=choose_placement("cpu", "bfloat16"),
        validation=keyword_intents(4, seed=2),
    )
    assert autocast_dtypes and set(autocast_dtypes) == {torch.bfloat16}
    saved = load_file(output / "model.safetensors")
    assert {tensor.dtype for tensor in saved.values()} == {torch.float32}


@pytest.mark.slow
def test_minilm_sentence_head_learns_intents(minilm_folder_path: Path, tmp_path: Path) -> None:
    data = keyword_intents(20, seed=5)
    validation = keyword_intents(8, seed=6)
    result = train_classifier(
        minilm_folder_path,
        data,
        TrainingArguments(strategy="sentence", epochs=2, batch_size=16, max_length=32),
        output_dir=tmp_path / "m",
        base_reference="minilm",
        placement=CPU,
        validation=validation,
    )
    assert result.metrics["accuracy"] >= 0.9  # chance: 0.25
    reloaded = load_classifier(tmp_path / "m", CPU)
    assert evaluate_classifier(reloaded, validation)["accuracy"] == result.metrics["accuracy"]
