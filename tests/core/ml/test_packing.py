"""Encoders run batches packed, without padding, and give the padded results."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from core.ml import predictors
from core.ml.batching import BatchingConfig, DynamicBatcher
from core.ml.device import choose_placement
from core.ml.loading import load_encoder
from core.ml.predictors import TextEncoder, pack_rows, worth_packing

CPU = choose_placement("cpu", "float32")
TEXTS = [
    "where is my parcel",
    "I was charged twice for the same card payment last week and I would like my money back",
    "hi",
    "can I change the delivery address after ordering",
    "refund",
    " ".join(["very long complaint about a broken kettle that leaks"] * 12),  # > 64 tokens
]


def test_pack_rows_places_every_row_once_within_the_width() -> None:
    lengths = [5, 60, 3, 33, 31, 64, 1, 20]
    rows = pack_rows(lengths, 64)
    placed = sorted(i for row in rows for i in row)
    assert placed == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 64 for row in rows)
    # First-fit decreasing: 64 | 60+3+1 | 33+31 | 20+5 -> four rows, none that two could share.
    assert len(rows) == 4


def test_pack_rows_refuses_a_row_wider_than_the_rows() -> None:
    with pytest.raises(ValueError, match="70 tokens does not fit rows of 64"):
        pack_rows([10, 70], 64)


def test_only_batches_with_much_padding_run_packed() -> None:
    assert not worth_packing([[1] * 15, [1] * 16, [1] * 17])  # length-sorted: padded is faster
    assert worth_packing([[1] * 4, [1] * 40, [1] * 9])  # 120 padded slots for 53 tokens


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_packed_batches_give_the_padded_embeddings(tiny_bert_folder: Path, pooling: str) -> None:
    encoder = load_encoder(tiny_bert_folder, CPU)
    encoder.pooling = pooling  # type: ignore[assignment]
    assert encoder.packs
    ids = encoder.tokenize(TEXTS)
    assert max(len(row) for row in ids) > predictors.PACKED_ROW_TOKENS
    packed, padded = encoder._run_packed(ids), encoder._run_padded(ids)
    assert packed.shape == (len(TEXTS), encoder.dimension)
    np.testing.assert_allclose(packed, padded, atol=1e-5)
    # And a text's embedding does not depend on what it was packed with.
    beside_others = encoder._run_packed([ids[0], ids[2], ids[4]])
    np.testing.assert_allclose(beside_others[0], packed[0], atol=1e-5)


def test_packing_is_checked_and_refused_where_the_model_ignores_positions(
    tiny_bert_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reference = load_encoder(tiny_bert_folder, CPU)
    model = reference.model
    forward = model.forward

    def without_positions(*args: Any, **kwargs: Any) -> Any:
        kwargs.pop("position_ids", None)  # every packed text after the first gets wrong ones
        return forward(*args, **kwargs)

    model.forward = without_positions  # type: ignore[method-assign]
    try:
        with caplog.at_level(logging.WARNING, logger="core.ml.predictors"):
            encoder = TextEncoder(model, reference.tokenizer, CPU, pooling="mean")
    finally:
        model.forward = forward  # type: ignore[method-assign]
    assert not encoder.packs
    assert "packed and padded embeddings differ" in caplog.text


def test_decoders_and_unlisted_architectures_run_padded(tiny_llama_folder: Path) -> None:
    assert not load_encoder(tiny_llama_folder, CPU).packs  # last-token pooling, causal


def test_packing_can_be_turned_off(tiny_bert_folder: Path) -> None:
    reference = load_encoder(tiny_bert_folder, CPU)
    encoder = TextEncoder(reference.model, reference.tokenizer, CPU, packing=False)
    assert not encoder.packs


def test_packed_embeddings_of_the_real_encoder_match_padded_ones(minilm_folder_path: Path) -> None:
    encoder = load_encoder(minilm_folder_path, CPU)
    assert encoder.packs
    ids = encoder.tokenize(TEXTS)
    cosine = (encoder._run_packed(ids) * encoder._run_padded(ids)).sum(-1)  # both normalised
    assert cosine.min() > 1 - 1e-5


def test_half_precision_embeddings_stay_close_to_fp32(minilm_folder_path: Path) -> None:
    """bf16 weights (CPUs with AMX or AVX512-BF16, GPUs): packed embeddings within 1e-3 of the
    fp32 ones."""
    reference = load_encoder(minilm_folder_path, CPU).encode(TEXTS)
    half = load_encoder(minilm_folder_path, choose_placement("cpu", "bfloat16"))
    assert half.packs and half.model.dtype == torch.bfloat16
    assert half.encode(TEXTS).dtype == np.float32
    cosine = (half.encode(TEXTS) * reference).sum(-1)
    assert cosine.min() > 0.999


def test_packed_pooling_averages_half_precision_states_in_float32() -> None:
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn((2, 64, 8), generator=generator).to(torch.bfloat16)  # (P, W, D)
    segments = torch.tensor([[0] * 40 + [1] * 24, [2] * 50 + [-1] * 14])
    pooled = predictors.pool_packed(hidden, segments, 3, "mean")
    assert pooled.dtype == torch.float32
    exact = hidden.double()
    expected = torch.stack([exact[0, :40].mean(0), exact[0, 40:].mean(0), exact[1, :50].mean(0)])
    # Averaged in bf16 the result would be off by up to 2^-9 of its size (about 1e-3 here).
    torch.testing.assert_close(pooled.double(), expected, atol=1e-6, rtol=0)
    cls = predictors.pool_packed(hidden, segments, 3, "cls")
    torch.testing.assert_close(cls, torch.stack([hidden[0, 0], hidden[0, 40], hidden[1, 0]]))


def test_eager_attention_runs_padded(tiny_bert_folder: Path) -> None:
    """Eager attention adds a mask as numbers, so a boolean block mask would not mask."""
    from transformers import AutoModel

    reference = load_encoder(tiny_bert_folder, CPU)
    eager = AutoModel.from_pretrained(tiny_bert_folder, attn_implementation="eager")
    assert not TextEncoder(eager, reference.tokenizer, CPU).packs


def test_batcher_runs_a_packing_model_once_per_batch(tiny_bert_folder: Path) -> None:
    encoder = load_encoder(tiny_bert_folder, CPU)
    calls: list[int] = []
    run = encoder.run

    def counted(batch: list[list[int]]) -> np.ndarray:
        calls.append(len(batch))
        return run(batch)

    encoder.run = counted  # type: ignore[method-assign]
    expected = load_encoder(tiny_bert_folder, CPU).encode(TEXTS)

    async def serve() -> np.ndarray:
        config = BatchingConfig(max_wait_ms=50, call_overhead_tokens=0)  # would cut every length
        async with DynamicBatcher.for_predictor(encoder, config, name="packed") as batcher:
            assert batcher.packs
            return await batcher.submit_many(TEXTS)

    rows = asyncio.run(serve())
    assert calls == [len(TEXTS)]
    np.testing.assert_allclose(rows, expected, atol=1e-5)
