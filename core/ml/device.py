"""The one place that decides where models run and in which precision."""

from __future__ import annotations

from dataclasses import dataclass

import torch

DEVICES = ("auto", "cuda", "mps", "cpu")
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class Placement:
    """Where a model runs (`device`) and the dtype of its weights for inference."""

    device: torch.device
    dtype: torch.dtype

    @property
    def is_gpu(self) -> bool:
        return self.device.type in ("cuda", "mps")

    @property
    def mixed_precision(self) -> str | None:
        """`bf16`/`fp16` for training with autocast on a GPU; `None` on CPU."""
        if self.device.type != "cuda":
            return None
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def choose_placement(device: str = "auto", dtype: str = "auto") -> Placement:
    """cuda > mps > cpu; bf16 on GPUs that support it, fp16 on older ones, fp32 on CPU.

    Either choice can be forced (settings `TEXTSUITE_DEVICE`, `TEXTSUITE_DTYPE`). Asking for a
    device this machine lacks is an error, not a silent fallback.
    """
    if device not in DEVICES and not device.startswith("cuda:"):
        raise ValueError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
    if device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    chosen = torch.device(device)
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available here")
    if chosen.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} requested but MPS is not available here")
    if dtype == "auto":
        if chosen.type == "cuda":
            resolved = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            resolved = torch.float32
    else:
        resolved = getattr(torch, dtype)
    return Placement(device=chosen, dtype=resolved)
