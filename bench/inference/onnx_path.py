"""The optional ONNX Runtime path, loaded through `core.ml.onnx` when it is there.

Assumed API (the module is written alongside this benchmark):
`export_encoder(folder, out_dir, *, quantize) -> Path` and `OnnxEncoder.load(path)` giving an
object with the `tokenize` / `run` / `encode` interface of `TextEncoder`. Any failure is
reported as a note so the rest of the benchmark still runs.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any


def load_onnx_encoders(folder: Path, out_dir: Path) -> tuple[dict[str, Any], str | None]:
    """The ONNX encoders that loaded, by label, and a note saying what failed, if anything."""
    try:
        onnx = importlib.import_module("core.ml.onnx")
    except ImportError as exc:
        return {}, f"ONNX rows skipped: core.ml.onnx is not importable ({exc})"
    encoders: dict[str, Any] = {}
    problems: list[str] = []
    for label, quantize in (("onnx fp32", False), ("onnx int8", True)):
        try:
            exported = onnx.export_encoder(
                folder, out_dir / label.replace(" ", "-"), quantize=quantize
            )
            encoders[label] = onnx.OnnxEncoder.load(exported)
        except Exception as exc:  # a benchmark reports what broke and carries on
            problems.append(f"{label}: {type(exc).__name__}: {exc}")
    return encoders, ("ONNX rows missing: " + "; ".join(problems)) if problems else None
