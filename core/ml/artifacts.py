"""What a model folder holds beyond Hugging Face's files: `textsuite_model.json`.

Every model textsuite trains is a folder that transformers (or sentence-transformers) can read,
plus this small file saying how to use it:

- `sequence-classification`: `AutoModelForSequenceClassification` weights, or with
  `adapter: true` a peft LoRA adapter (head included via `modules_to_save`) over `base_model`.
- `encoder-head`: a sentence-transformers encoder folder plus `head.safetensors` (`weight`
  (C, D), `bias` (C,)): the few-shot classifier.
- `encoder`: a sentence encoder (embeddings).

Folders without the file are plain Hugging Face / sentence-transformers models.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

ARTIFACT_FILE = "textsuite_model.json"
HEAD_FILE = "head.safetensors"
Architecture = Literal["sequence-classification", "encoder-head", "encoder"]
ARCHITECTURES: tuple[Architecture, ...] = ("sequence-classification", "encoder-head", "encoder")


@dataclass
class ArtifactInfo:
    architecture: Architecture
    base_model: str
    labels: list[str] = field(default_factory=list)
    adapter: bool = False
    max_length: int = 256
    temperature: float = 1.0
    pooling: str = "mean"
    normalize: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def task(self) -> str:
        return "embedding" if self.architecture == "encoder" else "classification"

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ARTIFACT_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, folder: Path) -> ArtifactInfo | None:
        path = folder / ARTIFACT_FILE
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        if data.get("architecture") not in ARCHITECTURES:
            raise ValueError(
                f"{path}: unknown architecture {data.get('architecture')!r}; "
                f"expected one of {', '.join(ARCHITECTURES)}"
            )
        known = set(cls.__dataclass_fields__)
        return cls(**{key: value for key, value in data.items() if key in known})
