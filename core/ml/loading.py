"""Loading models into predictors, once per process.

`ModelCache` keys each loaded predictor by folder, task and placement, so a worker or an API
process loads a model once however many requests or jobs use it. Loading errors name the
folder and what was expected there.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from core.metrics import MODEL_LOAD_SECONDS
from core.ml.artifacts import HEAD_FILE, ArtifactInfo
from core.ml.device import Placement
from core.ml.predictors import (
    EncoderHeadClassifier,
    TextClassifier,
    TextEncoder,
    sentence_transformers_config,
)

Classifier = TextClassifier | EncoderHeadClassifier
T = TypeVar("T")
DECODER_TYPES = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "gpt2"}


# transformers builds a model with torch's initialisers and weight tying switched off by
# patching them process-wide for the duration of `from_pretrained`; two builds at once in
# threads (a service loading two apps' models, a training job beside a request) can leave them
# patched for good, and every later model gets uninitialised (meta) weights. So every model
# this project builds is built under this lock; it is held while the weights load, not while
# a model runs or trains.
MODEL_BUILD_LOCK = threading.RLock()


class ModelLoadError(RuntimeError):
    """A folder was found but could not be loaded as the model asked for."""


def is_decoder(folder: Path) -> bool:
    return AutoConfig.from_pretrained(folder).model_type in DECODER_TYPES


def _guard(folder: Path, what: str, load: Callable[[], T]) -> T:
    try:
        with MODEL_BUILD_LOCK:
            started = time.perf_counter()  # the load's own time, not the wait for the lock
            loaded = load()
            seconds = time.perf_counter() - started
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(
            f"cannot load {what} from {folder}: {type(exc).__name__}: {exc}. Expected a Hugging "
            "Face folder (config.json, weights, tokenizer); re-export or retrain the model."
        ) from exc
    MODEL_LOAD_SECONDS.labels(what).observe(seconds)
    return loaded


def load_encoder(folder: Path, placement: Placement) -> TextEncoder:
    """A sentence encoder from a sentence-transformers or plain Hugging Face folder."""

    def load() -> TextEncoder:
        pooling, normalize, max_length = sentence_transformers_config(folder)
        info = ArtifactInfo.read(folder)
        if info is not None:
            pooling, normalize, max_length = info.pooling, info.normalize, info.max_length  # type: ignore[assignment]
        elif is_decoder(folder):
            pooling = "last"
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModel.from_pretrained(folder, dtype=placement.dtype)
        return TextEncoder(
            model,
            tokenizer,
            placement,
            pooling=pooling,
            normalize=normalize,
            max_length=max_length,
        )

    return _guard(folder, "encoder", load)


def load_classifier(
    folder: Path,
    placement: Placement,
    resolve_base: Callable[[str], Path] | None = None,
) -> Classifier:
    """A classifier from a textsuite model folder (or a plain folder with `id2label`).

    LoRA adapters are applied to their base model (found through `resolve_base`) and merged,
    so inference costs the same as a fully fine-tuned model.
    """

    def load() -> Classifier:
        info = ArtifactInfo.read(folder)
        if info is not None and info.architecture == "encoder-head":
            from safetensors.numpy import load_file

            head = load_file(folder / HEAD_FILE)
            return EncoderHeadClassifier(
                load_encoder(folder, placement),
                head["weight"],
                head["bias"],
                labels=info.labels,
                temperature=info.temperature,
            )
        if info is not None and info.architecture == "encoder":
            raise ValueError("this folder holds an encoder (embeddings), not a classifier")
        if info is not None and info.adapter:
            if resolve_base is None:
                raise ValueError(f"adapter over {info.base_model!r} needs a base-model resolver")
            model = _merged_adapter(folder, resolve_base(info.base_model), info, placement)
            tokenizer = AutoTokenizer.from_pretrained(folder)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(
                folder, dtype=placement.dtype
            )
            tokenizer = AutoTokenizer.from_pretrained(folder)
        labels = (
            info.labels
            if info
            else [model.config.id2label[i] for i in range(model.config.num_labels)]
        )
        return TextClassifier(
            model,
            tokenizer,
            placement,
            labels=labels,
            temperature=info.temperature if info else 1.0,
            max_length=info.max_length if info else 256,
        )

    return _guard(folder, "classifier", load)


def _merged_adapter(folder: Path, base: Path, info: ArtifactInfo, placement: Placement) -> Any:
    from peft import PeftModel

    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=len(info.labels), dtype=placement.dtype
    )
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if model.config.pad_token_id is None:
        pad = tokenizer.pad_token_id
        model.config.pad_token_id = pad if pad is not None else tokenizer.eos_token_id
    return PeftModel.from_pretrained(model, folder).merge_and_unload()


class ModelCache:
    """Loaded predictors by (folder, task, placement); loads each one once, thread-safely."""

    def __init__(self) -> None:
        self._items: dict[tuple[str, str, str, str], Any] = {}
        self._locks: dict[tuple[str, str, str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, folder: Path, task: str, placement: Placement, load: Callable[[], T]) -> T:
        key = (str(folder.resolve()), task, str(placement.device), str(placement.dtype))
        with self._guard:
            if key in self._items:
                return self._items[key]
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:  # one loader per key; other keys load in parallel
            if key not in self._items:
                self._items[key] = load()
            return self._items[key]

    def evict(self, folder: Path) -> None:
        """Forget every predictor loaded from `folder` (after a model version is replaced)."""
        prefix = str(folder.resolve())
        with self._guard:
            for key in [key for key in self._items if key[0] == prefix]:
                del self._items[key]

    def __len__(self) -> int:
        return len(self._items)


@functools.cache
def model_cache() -> ModelCache:
    """The process's model cache (created on first use, never at import)."""
    return ModelCache()
