"""The one place that decides where models run and in which precision."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

import torch

DEVICES = ("auto", "cuda", "mps", "cpu")
DTYPES = ("auto", "float32", "bfloat16", "float16")
TRAINING_PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Placement:
    """Where a model runs (`device`), the dtype of its weights for inference, and the
    precision training autocasts to (`training_precision`: auto, fp32, bf16 or fp16)."""

    device: torch.device
    dtype: torch.dtype
    training_precision: str = "auto"

    @property
    def is_gpu(self) -> bool:
        return self.device.type in ("cuda", "mps")

    def for_training(self) -> Placement:
        """The same device with fp32 weights, which training always starts from: loading a
        base model in bf16 and casting it back would round its pretrained weights."""
        return replace(self, dtype=torch.float32)

    @property
    def mixed_precision(self) -> str | None:
        """The autocast precision training runs in; the weights being trained stay fp32.

        A `training_precision` other than auto decides (fp32: no autocast). Under auto:
        GPUs: bf16 where supported, else fp16. CPUs: bf16 when this placement serves in bf16
        (`auto` on a CPU that multiplies it natively, or `TEXTSUITE_DTYPE=bfloat16`), else none.
        On a Zen 4 host (AVX512-BF16) MiniLM trains 47-51 against 33-34 examples/s (batch 16,
        64 tokens); whole runs took 0.67-0.77x the fp32 time at the same accuracy (Banking77
        full 94.16 against 94.12; Twitter sentiment weighted-F1 0.8706 against 0.8738).
        """
        if self.training_precision != "auto":
            return None if self.training_precision == "fp32" else self.training_precision
        if self.device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if self.device.type == "cpu" and self.dtype == torch.bfloat16:
            return "bf16"
        return None


def cpu_multiplies_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively: Intel AMX (Xeon 4th generation and later) or
    AVX512-BF16 (AMD Zen 4 and later, Intel Cooper Lake).

    There, bf16 weights serve MiniLM faster than fp32 with the same predictions. bench.inference
    on an AMX host: 1,124 against 553 sentences/s offline, 8.8x against 5.5x one-at-a-time at 32
    clients; on a Zen 4 host (AVX512-BF16, no AMX): 692 against 436 sentences/s offline, 526
    against 293 requests/s at 32 clients (p99 80 against 142 ms). A Banking77 intent model
    fine-tuned in fp32 scores 85.49% served in bf16 against 85.52% in fp32 on the AMX host
    (99.87% of answers identical), 85.52% in both on the Zen 4 host (99.84%), confidences about
    0.001 apart on average. Elsewhere bf16 is emulated and slower.
    """
    for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        check = getattr(torch.cpu, name, None)  # the AMX check also asks the OS to enable AMX
        try:
            if check is not None and check():
                return True
        except RuntimeError:  # the kernel refuses the AMX state: not usable here
            continue
    return False


class PlacementSettings(Protocol):
    """The settings a placement is chosen from (`core.settings.Settings` has them)."""

    device: str
    dtype: str
    training_precision: str


def configured_placement(settings: PlacementSettings) -> Placement:
    """`choose_placement` with the choices of these settings (`TEXTSUITE_DEVICE`,
    `TEXTSUITE_DTYPE`, `TEXTSUITE_TRAINING_PRECISION`)."""
    return choose_placement(settings.device, settings.dtype, settings.training_precision)


def choose_placement(
    device: str = "auto", dtype: str = "auto", training_precision: str = "auto"
) -> Placement:
    """cuda > mps > cpu; bf16 on GPUs that support it, fp16 on older ones; on CPU bf16 where
    it multiplies bf16 natively (`cpu_multiplies_bf16`), else fp32.

    The dtype is the one models are loaded in for inference; training keeps its weights in
    fp32 whatever it is (mixed precision through autocast: `Placement.mixed_precision`, which
    follows the serving dtype unless `training_precision` says otherwise).

    Every choice can be forced (settings `TEXTSUITE_DEVICE`, `TEXTSUITE_DTYPE`,
    `TEXTSUITE_TRAINING_PRECISION`). Asking for a device or a precision this machine lacks is
    an error, not a silent fallback.
    """
    if device not in DEVICES and not device.startswith("cuda:"):
        raise ValueError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
    if training_precision not in TRAINING_PRECISIONS:
        raise ValueError(
            f"unknown training precision {training_precision!r}; "
            f"expected one of {', '.join(TRAINING_PRECISIONS)}"
        )
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
        elif chosen.type == "cpu" and cpu_multiplies_bf16():
            resolved = torch.bfloat16
        else:
            resolved = torch.float32
    else:
        resolved = getattr(torch, dtype)
    if training_precision == "fp16" and chosen.type != "cuda":
        raise ValueError(f"fp16 training needs a CUDA device; this placement is {chosen.type}")
    old_gpu = chosen.type == "cuda" and not torch.cuda.is_bf16_supported()
    if training_precision == "bf16" and old_gpu:
        raise ValueError("bf16 training requested but this GPU does not support bf16; use fp16")
    return Placement(device=chosen, dtype=resolved, training_precision=training_precision)
