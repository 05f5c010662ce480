"""The faster CPU path: our models exported to ONNX, quantised to int8, run by ONNX Runtime.

On a CPU, ONNX Runtime with int8 matrix multiplications encodes about twice as fast as PyTorch
in fp32. The spec allows that path only while accuracy stays within 1 point of fp32, so an
export is checked against its torch model (`verify_export`) before anything uses it.

- `export_encoder` / `export_classifier` write a self-contained folder: the fp32 graph, its
  int8 version, the tokenizer and a `textsuite_onnx.json` manifest (pooling, labels, ...).
- `OnnxEncoder` / `OnnxClassifier` load such a folder and have the interface of
  `TextEncoder` / `TextClassifier` (`tokenize`, `run`, `encode` / `predict_proba`), so the
  batching engine and the apps take either.
- `compare_predictors` / `verify_export` measure agreement with the torch model.

Importing this package imports ONNX Runtime; nothing else in `core` imports it, so the torch
path never pays for it.
"""

from __future__ import annotations

from core.ml.onnx.check import Agreement, compare_predictors, verify_export
from core.ml.onnx.export import export_classifier, export_encoder
from core.ml.onnx.manifest import MANIFEST_FILE, OnnxManifest
from core.ml.onnx.runtime import OnnxClassifier, OnnxEncoder, OnnxModel, session_options

__all__ = [
    "MANIFEST_FILE",
    "Agreement",
    "OnnxClassifier",
    "OnnxEncoder",
    "OnnxManifest",
    "OnnxModel",
    "compare_predictors",
    "export_classifier",
    "export_encoder",
    "session_options",
    "verify_export",
]
