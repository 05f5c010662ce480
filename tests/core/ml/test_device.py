"""Where models run and in which precision: one function decides, every choice overridable."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.ml import device
from core.ml.device import choose_placement, configured_placement, cpu_multiplies_bf16
from core.ml.training.trainer_setup import hf_arguments
from tests.conftest import make_settings


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


def test_training_precision_can_differ_from_the_serving_dtype(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(device, "cpu_multiplies_bf16", lambda: True)
    fp32_training = choose_placement("auto", "auto", "fp32")
    assert fp32_training.dtype == torch.bfloat16  # still serves in bf16
    assert fp32_training.mixed_precision is None
    monkeypatch.setattr(device, "cpu_multiplies_bf16", lambda: False)
    bf16_training = choose_placement("auto", "auto", "bf16")
    assert bf16_training.dtype == torch.float32  # serves in fp32, trains under bf16 autocast
    assert bf16_training.mixed_precision == "bf16"
    assert bf16_training.for_training().mixed_precision == "bf16"


def test_settings_choose_the_placement(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device, "cpu_multiplies_bf16", lambda: True)
    settings = make_settings(device="cpu", dtype="auto", training_precision="fp32")
    placement = configured_placement(settings)
    assert (placement.device, placement.dtype) == (torch.device("cpu"), torch.bfloat16)
    assert placement.mixed_precision is None


@pytest.mark.parametrize(
    ("requested", "message"),
    [
        (("cpu", "auto", "int8"), "unknown training precision 'int8'"),
        (("cpu", "auto", "fp16"), "fp16 training needs a CUDA device"),
    ],
)
def test_training_precisions_this_placement_cannot_run_are_refused(
    requested: tuple[str, str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        choose_placement(*requested)


def test_the_trainer_autocasts_as_the_training_precision_says(tmp_path: Path) -> None:
    def bf16(placement: device.Placement) -> bool:
        return hf_arguments(
            tmp_path, placement, epochs=1, learning_rate=1e-5, batch_size=2,
            gradient_accumulation_steps=1, weight_decay=0.0, warmup_ratio=0.0, seed=0,
            max_steps=None,
        ).bf16  # fmt: skip

    assert bf16(choose_placement("cpu", "bfloat16"))
    assert not bf16(choose_placement("cpu", "bfloat16", "fp32"))
    assert bf16(choose_placement("cpu", "float32", "bf16"))
    assert not bf16(choose_placement("cpu", "float32"))
