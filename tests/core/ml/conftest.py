"""Models for the core.ml tests, built once per session.

- `tiny_bert_folder`, `tiny_llama_folder`, `tiny_mpnet_folder`: randomly initialised BERT /
  Llama / MPNet models of a few thousand parameters per layer, with the packaged MiniLM
  tokenizer (their vocabularies match it). They exercise the real code paths in
  milliseconds; they know nothing.
- `minilm_folder_path`: the real all-MiniLM-L6-v2 from its package, for tests about quality.
- `smollm2_folder_path`: SmolLM2-135M-Instruct (a real Llama) converted once into the
  project's model cache (`var/models`, ignored by git; about 30 s the first time).

The `make_*` functions are plain factories for tests that need their own copy;
`keyword_intents` builds small labelled data sets.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from core.ml.training import LabelledTexts, TrainingArguments

REPO_ROOT = Path(__file__).resolve().parents[3]
TINY_HIDDEN = 32


def packaged_minilm() -> Path:
    from core.ml.packaged import minilm_folder

    return minilm_folder(REPO_ROOT / "var" / "models")


def _make_tiny_encoder(
    folder: Path, architecture: str, hidden: int, layers: int, positions: int = 128
) -> Path:
    """A random `architecture` ("Bert", "MPNet") encoder, no head, with the MiniLM tokenizer."""
    import transformers
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(packaged_minilm())
    config = getattr(transformers, f"{architecture}Config")(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=positions,
        pad_token_id=tokenizer.pad_token_id,
    )
    getattr(transformers, f"{architecture}Model")(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_tiny_bert(folder: Path, *, hidden: int = TINY_HIDDEN, layers: int = 2) -> Path:
    """A random BERT encoder (no head) with the MiniLM tokenizer, saved to `folder`."""
    return _make_tiny_encoder(folder, "Bert", hidden, layers)


def make_tiny_mpnet(folder: Path, *, hidden: int = TINY_HIDDEN, layers: int = 2) -> Path:
    """A random MPNet encoder (an architecture peft names no LoRA projections for) with the
    MiniLM tokenizer, saved to `folder`."""
    return _make_tiny_encoder(folder, "MPNet", hidden, layers, positions=130)  # from pad id + 1


def make_tiny_llama(folder: Path, *, hidden: int = TINY_HIDDEN, layers: int = 2) -> Path:
    """A random Llama decoder with the MiniLM vocabulary, saved to `folder`.

    Like real Llama tokenizers, its tokenizer has an EOS token and no pad token, so the code
    under test must fall back to EOS for padding.
    """
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(packaged_minilm())
    tokenizer.eos_token = tokenizer.sep_token
    tokenizer.pad_token = None
    config = LlamaConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=128,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=None,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def minilm_folder_path() -> Path:
    return packaged_minilm()


@pytest.fixture(scope="session")
def tiny_bert_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_llama_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_mpnet_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_mpnet(tmp_path_factory.mktemp("tiny-mpnet"))


@pytest.fixture(scope="session")
def model_cache_dir() -> Path:
    """Where converted models are kept between runs: TEXTSUITE_MODEL_CACHE_DIR or var/models."""
    configured = os.environ.get("TEXTSUITE_MODEL_CACHE_DIR")
    return Path(configured) if configured else REPO_ROOT / "var" / "models"


@pytest.fixture(scope="session")
def smollm2_folder_path(model_cache_dir: Path) -> Path:
    from core.ml.packaged import smollm2_folder

    return smollm2_folder(model_cache_dir)


INTENT_WORDS = {
    "card_arrival": ["card", "arrive", "delivery", "post", "mail", "shipped"],
    "refund": ["refund", "money", "back", "return", "reimburse", "charge"],
    "pin_reset": ["pin", "code", "forgot", "reset", "unlock", "blocked"],
    "exchange_rate": ["exchange", "rate", "currency", "euro", "dollar", "convert"],
}
FILLER = ["please", "my", "the", "i", "want", "help", "now", "can", "you", "today", "need"]


def keyword_intents(per_class: int, seed: int = 0, classes: int = 4) -> LabelledTexts:
    """Synthetic intents that differ only by their keywords: learnable by any model that
    learns at all, in any number of examples."""
    from core.ml.training import LabelledTexts

    rng = random.Random(seed)
    texts: list[str] = []
    labels: list[str] = []
    for label in list(INTENT_WORDS)[:classes]:
        for _ in range(per_class):
            words = rng.sample(INTENT_WORDS[label], 2) + rng.sample(FILLER, 3)
            rng.shuffle(words)
            texts.append(" ".join(words))
            labels.append(label)
    return LabelledTexts(texts, labels)


def quick(**overrides: object) -> TrainingArguments:
    """Training arguments for a few-second run on a tiny model."""
    from core.ml.training import TrainingArguments

    values: dict[str, object] = {
        "strategy": "full",
        "epochs": 2,
        "learning_rate": 1e-3,
        "batch_size": 8,
        "max_length": 32,
    }
    values.update(overrides)
    return TrainingArguments(**values)  # type: ignore[arg-type]
