"""Where models run and in which precision: one function decides, every choice overridable."""

from __future__ import annotations

import pytest
import torch

from core.ml import device
from core.ml.device import choose_placement, cpu_multiplies_bf16


@pytest.mark.parametrize(("amx", "expected"), [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_on_cpu_is_bf16_only_with_bf16_matrix_units(
    monkeypatch: pytest.MonkeyPatch, amx: bool, expected: torch.dtype
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(device, "cpu_multiplies_bf16", lambda: amx)
    placement = choose_placement()
    assert placement.device == torch.device("cpu")
    assert placement.dtype == expected
    assert not placement.is_gpu
    # training autocasts to bf16 where serving is bf16; the weights it trains stay fp32
    assert placement.mixed_precision == ("bf16" if amx else None)
    assert placement.for_training().dtype == torch.float32


def test_an_explicit_dtype_wins_over_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device, "cpu_multiplies_bf16", lambda: True)
    assert choose_placement("cpu", "float32").dtype == torch.float32
    assert choose_placement("cpu", "float32").mixed_precision is None  # fp32 training too
    monkeypatch.setattr(device, "cpu_multiplies_bf16", lambda: False)
    assert choose_placement("cpu", "bfloat16").dtype == torch.bfloat16
    assert choose_placement("cpu", "bfloat16").mixed_precision == "bf16"


@pytest.mark.parametrize(
    ("amx", "avx512_bf16", "expected"),
    [(True, False, True), (False, True, True), (False, False, False)],
)
def test_bf16_is_native_with_amx_or_avx512_bf16(
    monkeypatch: pytest.MonkeyPatch, amx: bool, avx512_bf16: bool, expected: bool
) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    assert cpu_multiplies_bf16() is expected


def test_bf16_detection_says_no_when_torch_cannot_tell(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    assert cpu_multiplies_bf16() is False

    def refuses() -> bool:
        raise RuntimeError("the kernel does not allow AMX state")

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", refuses, raising=False)
    assert cpu_multiplies_bf16() is False
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert cpu_multiplies_bf16() is True  # AMX refused, AVX512-BF16 still there


@pytest.mark.parametrize(
    ("requested", "message"),
    [
        (("tpu", "auto"), "unknown device 'tpu'"),
        (("cpu", "int4"), "unknown dtype 'int4'"),
    ],
)
def test_unknown_choices_are_refused(requested: tuple[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        choose_placement(*requested)


def test_a_missing_gpu_is_an_error_not_a_silent_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        choose_placement("cuda:0")
