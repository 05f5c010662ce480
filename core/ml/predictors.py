"""Predictors: a tokenizer and a model that turn texts into embeddings or class probabilities.

Both work in two steps so the batching engine can tokenize once, on arrival, and run many
requests as one padded batch later: `tokenize(texts) -> token ids`, then `run(ids) -> array`.
`encode` / `predict_proba` do both for a whole list, sorted by length to cut padding, in the
caller's order. Everything runs under `torch.inference_mode()`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from core.ml.device import Placement

TokenIds = list[int]
Pooling = Literal["mean", "cls", "last"]


def map_sorted(
    items: Sequence[TokenIds], run: Callable[[list[TokenIds]], np.ndarray], batch_size: int
) -> np.ndarray:
    """Run `run` over `items` in length-sorted batches; rows come back in `items`' order."""
    if not items:
        raise ValueError("nothing to run: got an empty list of texts")
    order = sorted(range(len(items)), key=lambda i: len(items[i]))
    chunks = [
        run([items[i] for i in order[start : start + batch_size]])
        for start in range(0, len(order), batch_size)
    ]
    stacked = np.concatenate(chunks, axis=0)
    result = np.empty_like(stacked)
    result[order] = stacked
    return result


class TokenizedModel:
    """What encoders and classifiers share: tokenization, padding, device placement."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        placement: Placement,
        max_length: int,
    ) -> None:
        if tokenizer.pad_token is None:
            # Llama-family tokenizers have no pad token; EOS is what transformers suggests.
            tokenizer.pad_token = tokenizer.eos_token
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        self.model = model.to(placement.device).eval()
        self.tokenizer = tokenizer
        self.placement = placement
        self.max_length = max_length

    def tokenize(self, texts: Sequence[str]) -> list[TokenIds]:
        encoded = self.tokenizer(
            list(texts), truncation=True, max_length=self.max_length, add_special_tokens=True
        )
        return [list(ids) for ids in encoded["input_ids"]]

    def _pad(self, batch: list[TokenIds]) -> dict[str, torch.Tensor]:
        width = max(len(ids) for ids in batch)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)  # (B, T)
        attention = torch.zeros((len(batch), width), dtype=torch.long)  # (B, T)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention[row, : len(ids)] = 1
        device = self.placement.device
        return {"input_ids": input_ids.to(device), "attention_mask": attention.to(device)}


class TextEncoder(TokenizedModel):
    """Sentence embeddings: a transformer's hidden states pooled (mean, CLS or last token)."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        placement: Placement,
        *,
        pooling: Pooling = "mean",
        normalize: bool = True,
        max_length: int = 256,
    ) -> None:
        super().__init__(model, tokenizer, placement, max_length)
        self.pooling = pooling
        self.normalize = normalize

    @property
    def dimension(self) -> int:
        return int(self.model.config.hidden_size)

    def run(self, batch: list[TokenIds]) -> np.ndarray:
        """Embeddings of one batch of token ids, shape (B, D), float32."""
        inputs = self._pad(batch)
        with torch.inference_mode():
            hidden = self.model(**inputs).last_hidden_state  # (B, T, D)
            pooled = pool(hidden, inputs["attention_mask"], self.pooling)  # (B, D)
            if self.normalize:
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return pooled.float().cpu().numpy()

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        return map_sorted(self.tokenize(texts), self.run, batch_size)


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """(B, T, D) hidden states and a (B, T) mask -> (B, D) sentence vectors."""
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "last":
        last = mask.sum(dim=1) - 1  # (B,) index of each row's last real token (right padding)
        return hidden[torch.arange(hidden.size(0), device=hidden.device), last]
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


class TextClassifier(TokenizedModel):
    """Class probabilities from a sequence-classification model (encoder or decoder + head).

    `temperature` divides the logits before the softmax; it comes from calibration on
    validation data and is stored with the model version.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        placement: Placement,
        *,
        labels: Sequence[str],
        temperature: float = 1.0,
        max_length: int = 256,
    ) -> None:
        super().__init__(model, tokenizer, placement, max_length)
        if len(labels) != model.config.num_labels:
            raise ValueError(
                f"{len(labels)} labels given for a model with {model.config.num_labels} outputs"
            )
        self.labels = list(labels)
        self.temperature = temperature

    def logits(self, batch: list[TokenIds]) -> np.ndarray:
        inputs = self._pad(batch)
        with torch.inference_mode():
            logits = self.model(**inputs).logits  # (B, C)
        return logits.float().cpu().numpy()

    def run(self, batch: list[TokenIds]) -> np.ndarray:
        """Probabilities of one batch, shape (B, C)."""
        return softmax(self.logits(batch) / self.temperature)

    def predict_proba(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        return map_sorted(self.tokenize(texts), self.run, batch_size)


class EncoderHeadClassifier:
    """A sentence encoder with a linear head on its embeddings (the few-shot model).

    Same interface as `TextClassifier`: `tokenize`, `run`, `predict_proba`, `labels`.
    """

    def __init__(
        self,
        encoder: TextEncoder,
        weight: np.ndarray,
        bias: np.ndarray,
        *,
        labels: Sequence[str],
        temperature: float = 1.0,
    ) -> None:
        if weight.shape != (len(labels), encoder.dimension) or bias.shape != (len(labels),):
            raise ValueError(
                f"head of shape {weight.shape}/{bias.shape} does not fit {len(labels)} labels "
                f"over {encoder.dimension}-d embeddings"
            )
        self.encoder = encoder
        self.weight = weight.astype(np.float32)  # (C, D)
        self.bias = bias.astype(np.float32)  # (C,)
        self.labels = list(labels)
        self.temperature = temperature

    @property
    def max_length(self) -> int:
        return self.encoder.max_length

    def tokenize(self, texts: Sequence[str]) -> list[TokenIds]:
        return self.encoder.tokenize(texts)

    embeds = True  # see core.ml.novelty.EmbeddingClassifier

    @property
    def embedding_dimension(self) -> int:
        return self.encoder.dimension

    def embed(self, batch: list[TokenIds]) -> np.ndarray:
        """The sentence embeddings the head reads, (B, D)."""
        return self.encoder.run(batch)

    def classify(self, embeddings: np.ndarray) -> np.ndarray:
        """Probabilities (B, C) from sentence embeddings (B, D)."""
        return softmax(self._head(embeddings) / self.temperature)

    def _head(self, embeddings: np.ndarray) -> np.ndarray:
        return embeddings @ self.weight.T + self.bias  # (B, D) -> (B, C)

    def logits(self, batch: list[TokenIds]) -> np.ndarray:
        return self._head(self.embed(batch))

    def run(self, batch: list[TokenIds]) -> np.ndarray:
        return self.classify(self.embed(batch))

    def predict_proba(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        return map_sorted(self.tokenize(texts), self.run, batch_size)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def sentence_transformers_config(path: Path) -> tuple[Pooling, bool, int]:
    """Pooling, normalisation and max length from a sentence-transformers folder, if it is one.

    Plain Hugging Face folders get mean pooling, no normalisation and 256 tokens (or the last
    token for decoders, decided by the caller).
    """
    pooling: Pooling = "mean"
    normalize = False
    max_length = 256
    modules_file = path / "modules.json"
    if modules_file.exists():
        modules = json.loads(modules_file.read_text())
        normalize = any(m["type"].endswith("Normalize") for m in modules)
        for module in modules:
            if module["type"].endswith("Pooling"):
                config = json.loads((path / module["path"] / "config.json").read_text())
                if config.get("pooling_mode_cls_token"):
                    pooling = "cls"
                elif config.get("pooling_mode_lasttoken"):
                    pooling = "last"
    bert_config = path / "sentence_bert_config.json"
    if bert_config.exists():
        max_length = int(json.loads(bert_config.read_text()).get("max_seq_length", max_length))
    return pooling, normalize, max_length
