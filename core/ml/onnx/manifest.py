"""What an ONNX export folder holds: `textsuite_onnx.json` and the graph files it names.

A folder is self-contained: `model.onnx` (fp32), `model.int8.onnx` (when quantised), the
tokenizer files, the manifest, and the source's `textsuite_model.json` / `head.safetensors`
when it had them. The manifest says which graph to run and how (pooling, labels, ...).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

MANIFEST_FILE = "textsuite_onnx.json"
FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
OPSET = 17
GraphOutput = Literal["last_hidden_state", "logits"]
Precision = Literal["int8", "fp32"]


@dataclass
class OnnxManifest:
    """How to run an export folder: which graph, what it outputs, and the torch settings."""

    graph_output: GraphOutput
    model_file: str
    quantized: bool
    fp32_file: str = FP32_FILE
    pooling: str = "mean"
    normalize: bool = True
    max_length: int = 256
    dimension: int = 0  # hidden size for encoder graphs, number of classes for logits graphs
    labels: list[str] = field(default_factory=list)
    temperature: float = 1.0
    head: bool = False  # HEAD_FILE holds a linear head over the pooled embeddings
    source: str = ""
    opset: int = OPSET

    def save(self, folder: Path) -> None:
        (folder / MANIFEST_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, folder: Path) -> OnnxManifest:
        path = folder / MANIFEST_FILE
        if not path.exists():
            raise FileNotFoundError(
                f"{folder} is not an ONNX export: it has no {MANIFEST_FILE}. Create one with "
                "core.ml.onnx.export_encoder or export_classifier."
            )
        data = json.loads(path.read_text())
        known = set(cls.__dataclass_fields__)
        return cls(**{key: value for key, value in data.items() if key in known})

    def graph_file(self, precision: Precision | None = None) -> str:
        """The graph to run: the exported choice, or the fp32 / int8 one when asked for."""
        if precision is None:
            return self.model_file
        if precision == "fp32":
            return self.fp32_file
        if precision == "int8":
            if not self.quantized:
                raise ValueError("this export has no int8 graph: export again with quantize=True")
            return INT8_FILE
        raise ValueError(f"unknown precision {precision!r}; expected one of int8, fp32")
