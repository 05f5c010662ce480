"""Regularisers for classification training, each behind a `TrainingArguments` setting.

- Text augmentation (`augment`): extra, altered copies of the training texts. Word dropout
  removes words at random; nearest-neighbour substitution swaps a word for one of the words
  closest to it in the base model's own input-embedding space (no word list to download).
- Adversarial training (`adversarial_epsilon`, FGM): after the usual backward pass, the word
  embeddings of each text are moved a fixed L2 distance along their loss gradient and the
  batch is trained on again, so the model learns to hold its answer in a small neighbourhood
  of each text. It is applied to the embedding layer's output through forward hooks, so it
  works whether or not the embedding weights train (LoRA freezes them).

Weight decay and dropout are plain `TrainingArguments` fields. None of these is on by default:
none helped on the benchmarks (MiniLM, `sentence` strategy, one seed unless said):

| run | baseline | FGM 0.1 | FGM 0.3 | FGM 1.0 | word dropout | neighbours |
| --- | --- | --- | --- | --- | --- | --- |
| Banking77 10/intent, acc., seed 42 | 85.49 | | 85.62 | 85.52 | 85.16 | 85.78 |
| the same, seed 1 | 86.27 | | | | | 86.01 |
| Twitter fin. news, 2 epochs, wF1 | 0.8423 | 0.8447 | | 0.6416 | | |

(augmentation: 2 copies, 10% of words dropped or 15% swapped.) The scale of `epsilon`: MiniLM's
word-embedding rows have an L2 norm of about 1.1, and the gradient of a short text sits mostly
on its one or two decisive words, so epsilon 1 can move such a word by most of its length —
enough to erase "plunge" from a headline that stays labelled negative, which taught the
sentiment model to answer "neutral". Keep it at a few tenths at most.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from core.ml.loading import MODEL_BUILD_LOCK
from core.ml.training.arguments import TrainingArguments
from core.ml.training.data import LabelledTexts

# Neighbours a substituted word is drawn from (nearest first, by cosine).
NEIGHBOURS = 8


def augment_texts(data: LabelledTexts, args: TrainingArguments, base: Path) -> LabelledTexts:
    """`data` plus `args.augment_copies` altered copies of each text (copies that came out
    unchanged are left out), labels kept. `base` supplies the embedding space for
    `neighbours`. Deterministic for a given `args.seed`."""
    if args.augment == "none":
        return data
    rng = random.Random(args.seed)
    if args.augment == "word_dropout":
        alter = drop_words
    else:
        alter = WordNeighbours.of_model(base).substitute
    texts, labels = list(data.texts), list(data.labels)
    for _ in range(args.augment_copies):
        for text, label in zip(data.texts, data.labels, strict=True):
            altered = alter(text, args.augment_rate, rng)
            if altered != text:
                texts.append(altered)
                labels.append(label)
    return LabelledTexts(texts, labels)


def drop_words(text: str, rate: float, rng: random.Random) -> str:
    """`text` with each word removed with probability `rate`; at least one word stays."""
    words = text.split()
    if len(words) < 2:
        return text
    kept = [word for word in words if rng.random() >= rate]
    return " ".join(kept or [rng.choice(words)])


class WordNeighbours:
    """Whole words of a tokenizer's vocabulary and their nearest neighbours by the cosine of
    their input embeddings (rows of the model's embedding matrix)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, embeddings: np.ndarray) -> None:
        vocabulary = tokenizer.get_vocab()  # token -> id
        spellings = {
            token_id: tokenizer.convert_tokens_to_string([token]).strip()
            for token, token_id in vocabulary.items()
        }
        candidates = {
            token_id: text
            for token_id, text in spellings.items()
            if len(text) > 1 and text.isalpha() and token_id < len(embeddings)
        }
        # A whole word is one token both on its own and after a space; word pieces
        # ("##ing", BPE's mid-word "ing") spell differently or split there.
        ids = list(candidates)
        spaced = tokenizer([" " + candidates[i] for i in ids], add_special_tokens=False)
        self.words = {
            candidates[i]: i
            for i, encoded in zip(ids, spaced["input_ids"], strict=True)
            if list(encoded) == [i]
        }
        self.tokenizer = tokenizer
        self._spellings = sorted(self.words, key=self.words.__getitem__)  # (W,) by token id
        self._row = {self.words[text]: row for row, text in enumerate(self._spellings)}
        rows = embeddings[[self.words[text] for text in self._spellings]]  # (W, D)
        self._unit = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)
        self._nearest: dict[int, list[str]] = {}

    @classmethod
    def of_model(cls, base: Path) -> WordNeighbours:
        tokenizer = AutoTokenizer.from_pretrained(base)
        with MODEL_BUILD_LOCK:
            model = AutoModel.from_pretrained(base, dtype=torch.float32)
        weight = model.get_input_embeddings().weight.detach().numpy()  # (V, D)
        return cls(tokenizer, weight)

    def neighbours(self, word: str) -> list[str]:
        """Up to `NEIGHBOURS` other whole words nearest to `word`; [] when it is not one
        token of the vocabulary."""
        encoded = self.tokenizer(" " + word, add_special_tokens=False)["input_ids"]
        if len(encoded) != 1 or int(encoded[0]) not in self._row:
            return []
        token_id = int(encoded[0])
        if token_id not in self._nearest:
            similarity = self._unit @ self._unit[self._row[token_id]]  # (W,)
            order = np.argsort(-similarity)[: NEIGHBOURS + 4]
            spelled = self._spellings[self._row[token_id]].lower()
            nearest = [self._spellings[row] for row in order]
            self._nearest[token_id] = [w for w in nearest if w.lower() != spelled][:NEIGHBOURS]
        return self._nearest[token_id]

    def substitute(self, text: str, rate: float, rng: random.Random) -> str:
        """`text` with each word that has neighbours replaced by one with probability `rate`
        (a capital first letter is kept). Punctuation around a word stays where it was."""
        words = text.split()
        for index, word in enumerate(words):
            core = word.strip(".,!?;:'\"()")
            if not core.isalpha() or rng.random() >= rate:
                continue
            options = self.neighbours(core)
            if not options:
                continue
            chosen = rng.choice(options)
            if core[0].isupper():
                chosen = chosen[0].upper() + chosen[1:]
            words[index] = word.replace(core, chosen, 1)
        return " ".join(words)


def input_embeddings(model: torch.nn.Module) -> torch.nn.Module:
    """The word-embedding layer of a transformers model, a peft model around one, or a
    module that keeps one as `.encoder` (the sentence-head classifier)."""
    for candidate in (model, getattr(model, "encoder", None)):
        get = getattr(candidate, "get_input_embeddings", None)
        layer = get() if callable(get) else None
        if isinstance(layer, torch.nn.Module):
            return layer
    raise TypeError(f"{type(model).__name__} has no input embeddings to perturb")


@contextmanager
def recording_output(layer: torch.nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collects the outputs of `layer` during the block, kept so that their gradients can be
    read after a backward pass (made differentiable when the layer's weights are frozen)."""
    outputs: list[torch.Tensor] = []

    def keep(_module: torch.nn.Module, _inputs: object, output: torch.Tensor) -> None:
        if not output.requires_grad:
            output.requires_grad_(True)  # a leaf here: the frozen weights carry no graph
        output.retain_grad()
        outputs.append(output)

    handle = layer.register_forward_hook(keep)
    try:
        yield outputs
    finally:
        handle.remove()


@contextmanager
def shifted_output(layer: torch.nn.Module, delta: torch.Tensor) -> Iterator[None]:
    """`layer`'s output plus `delta` during the block."""

    def shift(_module: torch.nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor:
        return output + delta.to(output.dtype)

    handle = layer.register_forward_hook(shift)
    try:
        yield
    finally:
        handle.remove()


def adversarial_delta(gradient: torch.Tensor, epsilon: float) -> torch.Tensor:
    """FGM's step: `epsilon` times the gradient of each text's embeddings (B, T, D) scaled to
    unit L2 norm per text; texts with no gradient are left in place."""
    norms = gradient.float().flatten(1).norm(dim=1)  # (B,)
    scale = torch.where(norms > 0, epsilon / norms.clamp_min(1e-12), torch.zeros_like(norms))
    return (gradient.float() * scale[:, None, None]).detach()  # (B, T, D)
