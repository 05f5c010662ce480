"""Labelled texts for training: reading them, fingerprinting them, splitting them per class."""

from __future__ import annotations

import csv
import hashlib
import json
import random
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

HELD_OUT_FILE = "held_out.jsonl"  # a classifier version's held-out examples, in its folder


@dataclass
class LabelledTexts:
    """Texts with one label each: what a classifier is trained and evaluated on."""

    texts: list[str]
    labels: list[str]

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels")
        self.texts = [str(text) for text in self.texts]
        self.labels = [str(label) for label in self.labels]

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def label_names(self) -> list[str]:
        """The distinct labels, sorted: the class order of every model trained on this data."""
        return sorted(set(self.labels))

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(self.labels).items()))

    @classmethod
    def joined(cls, *parts: LabelledTexts) -> LabelledTexts:
        """The parts' examples one after another, in order."""
        return cls(
            [text for part in parts for text in part.texts],
            [label for part in parts for label in part.labels],
        )

    def to_jsonl(self, path: Path) -> None:
        """Write one `{"text", "label"}` object per line (`from_jsonl` reads it back)."""
        with Path(path).open("w", encoding="utf-8") as handle:
            for text, label in zip(self.texts, self.labels, strict=True):
                handle.write(json.dumps({"text": text, "label": label}, ensure_ascii=False) + "\n")

    def subset(self, indices: Sequence[int]) -> LabelledTexts:
        return LabelledTexts([self.texts[i] for i in indices], [self.labels[i] for i in indices])

    def sample_per_class(self, n: int, seed: int = 42) -> LabelledTexts:
        """At most `n` examples of each label, drawn reproducibly (for few-shot benchmarks)."""
        rng = random.Random(seed)
        chosen: list[int] = []
        for indices in _indices_by_label(self.labels).values():
            chosen.extend(sorted(rng.sample(indices, min(n, len(indices)))))
        return self.subset(sorted(chosen))

    @classmethod
    def from_csv(
        cls, path: Path, text_col: str = "text", label_col: str = "label"
    ) -> LabelledTexts:
        with Path(path).open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = {text_col, label_col} - set(reader.fieldnames or [])
            if missing:
                raise ValueError(
                    f"{path}: no column(s) {sorted(missing)}; columns are {reader.fieldnames}"
                )
            rows = list(reader)
        return cls([row[text_col] for row in rows], [row[label_col] for row in rows])

    @classmethod
    def from_file(cls, path: Path, text: str = "text", label: str = "label") -> LabelledTexts:
        """`from_csv` for a `.csv` file, `from_jsonl` for anything else (JSON Lines)."""
        if Path(path).suffix.lower() == ".csv":
            return cls.from_csv(path, text, label)
        return cls.from_jsonl(path, text, label)

    @classmethod
    def from_jsonl(
        cls, path: Path, text_key: str = "text", label_key: str = "label"
    ) -> LabelledTexts:
        texts: list[str] = []
        labels: list[str] = []
        with Path(path).open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                record = json.loads(line)
                if text_key not in record or label_key not in record:
                    raise ValueError(
                        f"{path}:{number}: expected keys {text_key!r} and {label_key!r}, "
                        f"got {sorted(record)}"
                    )
                texts.append(record[text_key])
                labels.append(record[label_key])
        return cls(texts, labels)


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).strip()


def data_fingerprint(data: LabelledTexts | Sequence[tuple[str, str]]) -> str:
    """SHA-256 of the normalised examples (Unicode NFC, whitespace collapsed), order-independent.

    Two runs on the same examples in another order, or with other spacing, share a fingerprint;
    duplicates count. Pairs (for embedding training) and labelled texts never collide.
    """
    if isinstance(data, LabelledTexts):
        return _fingerprint("labelled", zip(data.texts, data.labels, strict=True))
    return _fingerprint("pairs", data)


def run_fingerprint(
    data: LabelledTexts, validation: LabelledTexts | None = None, unlabelled: Sequence[str] = ()
) -> str:
    """The fingerprint of everything a classifier run reads: the examples it trains on, the
    held-out ones it is measured and calibrated on, and the unlabelled texts it self-trains
    from. A run with training examples alone has their `data_fingerprint`."""
    if (validation is None or not validation.texts) and not unlabelled:
        return data_fingerprint(data)
    parts = [data_fingerprint(data)]
    parts.append(data_fingerprint(validation) if validation is not None else "")
    parts.append(_fingerprint("unlabelled", ((text, "") for text in unlabelled)))
    return hashlib.sha256("run\n".join(parts).encode()).hexdigest()


def _fingerprint(kind: str, rows: Iterable[tuple[str, str]]) -> str:
    lines = sorted(
        json.dumps([_normalise(first), _normalise(second)], ensure_ascii=False)
        for first, second in rows
    )
    digest = hashlib.sha256(kind.encode())
    for line in lines:
        digest.update(b"\n" + line.encode("utf-8"))
    return digest.hexdigest()


def _place(seed: int, label: str, text: str) -> bytes:
    return hashlib.sha256(f"{seed}\n{label}\n{_normalise(text)}".encode()).digest()


def text_digest(text: str) -> str:
    """A short digest of a text as training reads it (NFC, whitespace collapsed)."""
    return hashlib.sha256(_normalise(text).encode()).hexdigest()[:24]


def _indices_by_label(labels: Sequence[str]) -> dict[str, list[int]]:
    by_label: dict[str, list[int]] = {}
    for index, label in enumerate(labels):
        by_label.setdefault(label, []).append(index)
    return dict(sorted(by_label.items()))


def stratified_split(
    data: LabelledTexts, fraction: float, seed: int
) -> tuple[LabelledTexts, LabelledTexts]:
    """(train, validation) with `fraction` of every class held out, at least one example of
    each class that has two or more, and classes with one example kept for training.

    Per class rather than sklearn's `train_test_split(stratify=...)`, which refuses few-shot
    sizes (a validation set smaller than the number of classes, classes of one). Each example
    has its own place in its class's order (a digest of the seed, its label and its text), so
    the split moves little as data changes: another class's examples change nothing, and a
    new example of this class moves at most one other across. What a new version holds out is
    then mostly what the version before held out too (`core.ml.runs` compares the two on it).
    """
    if fraction <= 0:
        return data, LabelledTexts([], [])
    train: list[int] = []
    validation: list[int] = []
    for label, indices in _indices_by_label(data.labels).items():
        ordered = sorted(indices, key=lambda i: _place(seed, label, data.texts[i]))
        held = (
            0 if len(ordered) < 2 else min(len(ordered) - 1, max(1, round(fraction * len(ordered))))
        )
        validation.extend(ordered[:held])
        train.extend(ordered[held:])
    return data.subset(sorted(train)), data.subset(sorted(validation))
