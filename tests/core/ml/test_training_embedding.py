"""Embedding fine-tuning from positive pairs (in-batch negatives)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.ml.artifacts import ArtifactInfo
from core.ml.device import choose_placement
from core.ml.evaluation import retrieval_metrics
from core.ml.loading import ModelLoadError, load_classifier, load_encoder
from core.ml.training import EmbeddingTrainingArguments, data_fingerprint, train_embeddings
from core.ml.training.embedding import split_pairs
from core.ml.training.sentence_pairs import order_without_duplicates

CPU = choose_placement("cpu", "float32")  # fp32 whatever the CPU: outputs are compared closely
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white"]
ANIMALS = ["cat", "dog", "horse", "mouse", "tiger", "eagle", "shark", "snake"]


def colour_pairs() -> list[tuple[str, str]]:
    """Each colour phrase paired with its own animal phrase: an arbitrary association that a
    random encoder does not know and training must put into the embeddings."""
    return [
        (f"the {colour} one", f"a quick {animal}")
        for colour, animal in zip(COLOURS, ANIMALS, strict=True)
    ]


def test_batches_never_repeat_a_text_when_they_can_avoid_it() -> None:
    popular = [("popular item", f"item {i}") for i in range(12)]
    others = [(f"query {i}", f"answer {i}") for i in range(36)]
    pairs = popular + others
    order = order_without_duplicates(pairs, batch_size=4, seed=0)
    assert sorted(order) == list(range(len(pairs)))
    batches = [order[i : i + 4] for i in range(0, len(order), 4)]
    for batch in batches:
        texts = [text for index in batch for text in pairs[index]]
        assert len(texts) == len(set(texts))
    assert order_without_duplicates(pairs, 4, seed=0) == order


def test_leftover_duplicates_stay_at_the_end() -> None:
    pairs = [("same", f"other {i}") for i in range(5)]  # can never be separated
    order = order_without_duplicates(pairs, batch_size=4, seed=0)
    assert sorted(order) == list(range(5))


def test_split_pairs_holds_out_a_share_or_nothing() -> None:
    pairs = [(f"a{i}", f"b{i}") for i in range(20)]
    train, validation = split_pairs(pairs, 0.25, seed=0)
    assert len(validation) == 5 and sorted(train + validation) == sorted(pairs)
    assert split_pairs(pairs[:5], 0.25, seed=0) == (pairs[:5], [])


@pytest.mark.parametrize("base", ["tiny-bert", "tiny-llama"])
def test_embedding_training_learns_its_pairs_and_saves_an_encoder(
    base: str, tiny_bert_folder: Path, tiny_llama_folder: Path, tmp_path: Path
) -> None:
    """A decoder (Llama, no pad token) trains as an encoder does, pooled on its last token."""
    folder = tiny_bert_folder if base == "tiny-bert" else tiny_llama_folder
    pairs = colour_pairs()
    before = load_encoder(folder, CPU)
    anchors, positives = [a for a, _ in pairs], [p for _, p in pairs]
    base_scores = retrieval_metrics(before.encode(anchors), before.encode(positives))
    reported: list[float] = []

    result = train_embeddings(
        folder,
        pairs,
        EmbeddingTrainingArguments(
            epochs=40, learning_rate=3e-3, batch_size=8, validation_fraction=0.0
        ),
        output_dir=tmp_path / "encoder",
        base_reference=base,
        placement=CPU,
        progress=lambda fraction, _: reported.append(fraction),
    )

    assert result.architecture == "encoder" and result.primary_metric == "mrr"
    assert result.metrics["n_train"] == 8 and result.metrics["strategy"] == "embedding"
    assert reported[-1] == 1.0
    json.dumps(result.metrics), json.dumps(result.params)
    info = ArtifactInfo.read(tmp_path / "encoder")
    assert info is not None and info.architecture == "encoder" and info.base_model == base
    after = load_encoder(tmp_path / "encoder", CPU)
    assert after.pooling == before.pooling == ("last" if base == "tiny-llama" else "mean")
    scores = retrieval_metrics(after.encode(anchors), after.encode(positives))
    assert scores["accuracy@1"] == 1.0 > base_scores["accuracy@1"]
    with pytest.raises(ModelLoadError, match="encoder"):
        load_classifier(tmp_path / "encoder", CPU)


def test_embedding_training_measures_validation_retrieval_before_and_after(
    tiny_bert_folder: Path, tmp_path: Path
) -> None:
    pairs = [(f"question number {i}", f"answer number {i}") for i in range(40)]
    result = train_embeddings(
        tiny_bert_folder,
        pairs,
        EmbeddingTrainingArguments(max_steps=2, batch_size=8, validation_fraction=0.25),
        output_dir=tmp_path / "encoder",
        base_reference="tiny-bert",
        placement=CPU,
    )
    metrics = result.metrics
    assert metrics["n_train"] == 30 and metrics["n_validation"] == 10
    for key in ("mrr", "accuracy@1", "base_mrr", "base_accuracy@1"):
        assert 0.0 <= metrics[key] <= 1.0
    assert data_fingerprint(pairs) == data_fingerprint(list(reversed(pairs)))
    assert np.isfinite(metrics["train_loss"])


@pytest.mark.parametrize(
    ("base", "adapted"),
    [
        ("tiny_llama_folder", {"q_proj", "v_proj"}),
        ("tiny_bert_folder", {"query", "value"}),
        ("tiny_mpnet_folder", {"q", "k", "v", "o", "dense"}),  # no peft defaults: every linear
    ],
)
def test_lora_embedding_training_tunes_adapters_and_saves_them_merged(
    base: str, adapted: set[str], request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Only the projections LoRA adapts (peft's defaults for the architecture, every linear
    layer where it has none) change; the saved folder is a plain encoder."""
    from safetensors.torch import load_file

    folder: Path = request.getfixturevalue(base)

    pairs = colour_pairs()
    anchors, positives = [a for a, _ in pairs], [p for _, p in pairs]
    before = load_encoder(folder, CPU)
    base_scores = retrieval_metrics(before.encode(anchors), before.encode(positives))
    arguments = EmbeddingTrainingArguments.from_dict(
        {"epochs": 40, "batch_size": 8, "validation_fraction": 0.0, "lora": {"r": 8}}
    )
    assert arguments.learning_rate_used == 2e-4  # LoRA's usual rate
    arguments.learning_rate = 1e-2
    result = train_embeddings(
        folder,
        pairs,
        arguments,
        output_dir=tmp_path / "encoder",
        base_reference=base,
        placement=CPU,
    )
    assert result.params["lora"]["r"] == 8 and result.params["learning_rate"] == 1e-2
    saved = tmp_path / "encoder"
    assert not (saved / "adapter_config.json").exists()
    after = load_encoder(saved, CPU)
    scores = retrieval_metrics(after.encode(anchors), after.encode(positives))
    assert scores["accuracy@1"] > base_scores["accuracy@1"]
    old, new = (
        load_file(folder / "model.safetensors"),
        load_file(saved / "model.safetensors"),
    )
    changed = set()
    for key, weight in new.items():  # a causal LM's keys say `model.`, a BERT's may say `bert.`
        stored = next(k for k in (key, f"model.{key}", f"bert.{key}", f"mpnet.{key}") if k in old)
        if not np.array_equal(weight.numpy(), old[stored].numpy()):
            changed.add(key.split(".")[-2])
    assert changed == adapted  # merged into the weights
