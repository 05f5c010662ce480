"""Predictors: a tokenizer and a model that turn texts into embeddings or class probabilities.

Both work in two steps so the batching engine can tokenize once, on arrival, and run many
requests as one padded batch later: `tokenize(texts) -> token ids`, then `run(ids) -> array`.
`encode` / `predict_proba` do both for a whole list, sorted by length to cut padding, in the
caller's order. Everything runs under `torch.inference_mode()`.

Encoders whose architecture allows it run **without padding**: the rows of a batch are packed
end to end into a few model rows, each text keeping its own position ids and attending only to
itself through a block-diagonal attention mask (what text-embeddings-inference does), so a
batch of mixed lengths costs its real tokens instead of rows x longest. Whether a model packs
correctly is checked when it is loaded, against the padded result.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from core.ml.device import Placement

log = logging.getLogger(__name__)

TokenIds = list[int]
Pooling = Literal["mean", "cls", "last"]

# Tokens per packed model row; a batch holding a longer text packs into rows as wide as that
# text (one tensor, one width), short texts filling them side by side. Attention inside a
# row costs width^2, so narrow rows win on short texts. MiniLM on 2 CPU cores, random batches of
# 32 Banking77 sentences (15 tokens on average): padded and cut into length groups 298 rows/s;
# packed into one row 355; rows of 256 tokens 380, 128 406, 64 463.
PACKED_ROW_TOKENS = 64
# A batch runs packed only where padding would add more than this share of its real tokens:
# length-sorted batches (offline encoding) have almost none, and there the plain padded call,
# with no block mask to build and apply, is faster (554 against 487 sentences/s on 2,000
# sorted Banking77 sentences in bench.inference).
PACK_ABOVE_PADDING = 0.25
# Architectures that take explicit position ids and a 4-D attention mask (transformers 5).
PACKABLE_MODEL_TYPES = frozenset({"bert"})


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

    def _packed(self, batch: list[TokenIds]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Model inputs with `batch` packed into rows, and which text each slot holds.

        Returns the inputs (`input_ids`, `position_ids` (P, W) and a block-diagonal boolean
        `attention_mask` (P, 1, W, W)) and `segments` (P, W): the index in `batch` of the text
        at each slot, -1 for the padding at a row's end.
        """
        width = max(PACKED_ROW_TOKENS, max(len(ids) for ids in batch))
        rows = pack_rows([len(ids) for ids in batch], width)
        used = max(sum(len(batch[i]) for i in row) for row in rows)
        input_ids = torch.full((len(rows), used), self.tokenizer.pad_token_id, dtype=torch.long)
        positions = torch.zeros((len(rows), used), dtype=torch.long)
        segments = torch.full((len(rows), used), -1, dtype=torch.long)
        for r, row in enumerate(rows):
            start = 0
            for i in row:
                end = start + len(batch[i])
                input_ids[r, start:end] = torch.tensor(batch[i], dtype=torch.long)
                positions[r, start:end] = torch.arange(len(batch[i]))
                segments[r, start:end] = i
                start = end
        same = segments.unsqueeze(2) == segments.unsqueeze(1)  # (P, W, W)
        # A text attends to itself only; a padding slot to itself alone (no empty softmax).
        mask = (same & (segments >= 0).unsqueeze(2)) | torch.eye(used, dtype=torch.bool)
        device = self.placement.device
        inputs = {
            "input_ids": input_ids.to(device),
            "position_ids": positions.to(device),
            "attention_mask": mask.unsqueeze(1).to(device),
        }
        return inputs, segments.to(device)


def worth_packing(batch: list[TokenIds]) -> bool:
    """Whether padding `batch` to its longest row would add more than `PACK_ABOVE_PADDING`."""
    lengths = [len(ids) for ids in batch]
    return len(lengths) * max(lengths) > (1 + PACK_ABOVE_PADDING) * sum(lengths)


def pack_rows(lengths: Sequence[int], width: int) -> list[list[int]]:
    """Indices of `lengths` packed into rows of at most `width` tokens, first-fit decreasing.

    Every length must be at most `width`. Rows come out in the order they were opened.
    """
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if lengths[i] > width:
            raise ValueError(f"a row of {lengths[i]} tokens does not fit rows of {width}")
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(width - lengths[i])
    return rows


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
        packing: bool = True,
    ) -> None:
        super().__init__(model, tokenizer, placement, max_length)
        self.pooling = pooling
        self.normalize = normalize
        # Whether batches run packed, without padding (see the module's docstring).
        self.packs = packing and self._packing_works()

    @property
    def dimension(self) -> int:
        return int(self.model.config.hidden_size)

    def run(self, batch: list[TokenIds]) -> np.ndarray:
        """Embeddings of one batch of token ids, shape (B, D), float32."""
        return (
            self._run_packed(batch)
            if self.packs and worth_packing(batch)
            else self._run_padded(batch)
        )

    def _run_padded(self, batch: list[TokenIds]) -> np.ndarray:
        inputs = self._pad(batch)
        with torch.inference_mode():
            hidden = self.model(**inputs).last_hidden_state.float()  # (B, T, D), summed in fp32
            pooled = pool(hidden, inputs["attention_mask"], self.pooling)  # (B, D)
        return self._finish(pooled)

    def _run_packed(self, batch: list[TokenIds]) -> np.ndarray:
        inputs, segments = self._packed(batch)
        with torch.inference_mode():
            hidden = self.model(**inputs).last_hidden_state  # (P, W, D)
            pooled = pool_packed(hidden, segments, len(batch), self.pooling)  # (B, D)
        return self._finish(pooled)

    def _finish(self, pooled: torch.Tensor) -> np.ndarray:
        pooled = pooled.float()  # (B, D); CLS pooling keeps the model's dtype until here
        if self.normalize:
            with torch.inference_mode():
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return pooled.cpu().numpy()

    def _packing_works(self) -> bool:
        """Whether packed batches give the padded results on this model (checked on a probe)."""
        config = self.model.config
        if self.pooling == "last" or config.model_type not in PACKABLE_MODEL_TYPES:
            return False
        if getattr(config, "_attn_implementation", None) != "sdpa":
            # Eager attention adds the mask as numbers: a boolean block mask would mask nothing.
            return False
        probe = self.tokenize(_PACKING_PROBE)
        try:
            packed, padded = self._run_packed(probe), self._run_padded(probe)
        except (TypeError, ValueError, RuntimeError) as exc:  # inputs this model does not take
            log.warning("packing is off for this %s model: %s", self.model.config.model_type, exc)
            return False
        cosine = (packed * padded).sum(-1) / (
            np.linalg.norm(packed, axis=-1) * np.linalg.norm(padded, axis=-1)
        )
        # In bf16, packed against padded: cosine 0.99992 on MiniLM, 0.99986 on an intent model
        # fine-tuned from it (bench.support); texts that see each other or get wrong positions
        # fall far lower (0.69 on MiniLM with eager attention).
        tolerance = 1e-5 if self.model.dtype == torch.float32 else 1e-3
        if float(cosine.min()) < 1 - tolerance:
            log.warning(
                "packing is off for this %s model: packed and padded embeddings differ "
                "(cosine %.6f)", self.model.config.model_type, float(cosine.min()),
            )  # fmt: skip
            return False
        return True

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        return map_sorted(self.tokenize(texts), self.run, batch_size)


# Texts of different lengths and content, packed into one row: a model that ignored the position
# ids or let texts attend to each other would give different embeddings packed than padded.
_PACKING_PROBE = (
    "Where is my order?",
    "I was charged twice for the same card payment last week and want a refund now.",
    "ok",
)


def pool_packed(
    hidden: torch.Tensor, segments: torch.Tensor, rows: int, pooling: Pooling
) -> torch.Tensor:
    """(P, W, D) packed hidden states and (P, W) segments -> (rows, D) sentence vectors."""
    flat = hidden.reshape(-1, hidden.size(-1))  # (P*W, D)
    owner = segments.reshape(-1)  # (P*W,)
    real = owner >= 0
    flat, owner = flat[real], owner[real]
    if pooling == "cls":
        first = torch.ones_like(owner, dtype=torch.bool)
        first[1:] = owner[1:] != owner[:-1]  # each text's first slot
        pooled = torch.empty((rows, flat.size(-1)), dtype=flat.dtype, device=flat.device)
        pooled[owner[first]] = flat[first]
        return pooled
    if pooling != "mean":
        raise ValueError(f"packed batches pool by mean or cls, not {pooling!r}")
    sums = torch.zeros((rows, flat.size(-1)), dtype=torch.float32, device=flat.device)
    sums.index_add_(0, owner, flat.float())
    counts = torch.bincount(owner, minlength=rows).clamp(min=1).unsqueeze(-1)  # (rows, 1)
    return sums / counts


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
    def packs(self) -> bool:
        return self.encoder.packs

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
