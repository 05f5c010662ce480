"""`python -m bench.inference [--quick]`: every figure next to its baseline from the same run."""

from __future__ import annotations

import argparse
import asyncio
import copy
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.inference.bulk import BulkResult, centroid_accuracy, mean_cosine, time_encoders
from bench.inference.data import banking77
from bench.inference.roof import flops_per_token, matmul_gflops
from bench.inference.serving import LoadResult, measure_engine, measure_naive
from bench.inference.table import print_table
from core.ml.batching import BatchingConfig


@dataclass(frozen=True)
class Sizes:
    bulk_texts: int  # test sentences encoded offline
    train_texts: int  # train sentences for the nearest-centroid accuracy check
    repeats: int  # best-of for offline timings
    serving_seconds: float  # per (server, clients) measurement
    roof_repeats: int  # best-of for the matmul roof
    levels: tuple[int, ...] = (1, 8, 32, 128)


@dataclass(frozen=True)
class Served:
    """One server's results by client count, and the label of the server it is compared with."""

    results: dict[int, LoadResult]
    baseline: str

    def ratio(self, servers: dict[str, Served], clients: int) -> float:
        return self.results[clients].throughput / servers[self.baseline].results[clients].throughput


ST = "sentence-transformers encode"
TORCH = "torch fp32 TextEncoder.encode"
PADDED = "torch fp32, padded batches"
BF16 = "torch bf16 TextEncoder.encode"
NAIVE = "one-at-a-time (torch fp32)"
NAIVE_BF16 = "one-at-a-time (torch bf16)"
NAIVE_INT8 = "one-at-a-time (onnx int8)"
INT8 = "onnx int8"
FULL = Sizes(bulk_texts=2000, train_texts=3000, repeats=5, serving_seconds=6.0, roof_repeats=5)
QUICK = Sizes(
    bulk_texts=64, train_texts=154, repeats=1, serving_seconds=0.25, roof_repeats=2, levels=(1, 32)
)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.inference", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that it runs")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a benchmark never downloads a model
    sizes = QUICK if args.quick else FULL
    if args.quick:
        print("SMOKE RUN (--quick): sizes far too small for results; run without --quick.")

    from core.ml.device import choose_placement
    from core.ml.loading import load_encoder
    from core.ml.references import resolve_model

    folder = resolve_model("minilm", cache_dir=Path("var/models")).path
    encoder = load_encoder(folder, choose_placement("cpu", "float32"))
    # The same model with packing off: every batch padded to its longest text (cut into groups
    # of similar length by the batcher), as before packing.
    padded = copy.copy(encoder)
    padded.packs = False
    variants = {
        PADDED: padded,
        # bf16 weights (what `auto` picks on CPUs with AMX or AVX512-BF16): native there,
        # emulated (slow) on others.
        BF16: load_encoder(folder, choose_placement("cpu", "bfloat16")),
    }
    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as onnx_dir:
        from bench.inference.onnx_path import load_onnx_encoders

        onnx_encoders, onnx_note = load_onnx_encoders(folder, Path(onnx_dir))
        run_all(sizes, folder, encoder, variants, onnx_encoders, onnx_note)


def run_all(
    sizes: Sizes,
    folder: Path,
    encoder: Any,
    variants: dict[str, Any],
    onnx: dict[str, Any],
    onnx_note: str | None,
) -> None:
    roof = matmul_gflops(repeats=sizes.roof_repeats)
    per_token = flops_per_token(encoder.model)
    test_texts, test_labels = banking77("test", sizes.bulk_texts)
    train_texts, train_labels = banking77("train", sizes.train_texts)
    tokens = float(np.mean([len(ids) for ids in encoder.tokenize(test_texts)]))
    print(
        f"\nCPU roof: {roof:.1f} GFLOP/s (fp32 matmul, {torch.get_num_threads()} threads). "
        "Encoder: "
        f"{per_token / 1e6:.1f} MFLOP/token; test texts average {tokens:.1f} tokens."
    )

    def roof_share(texts_per_s: float) -> str:
        return f"{texts_per_s * tokens * per_token / 1e9 / roof:.0%}"

    bulk = offline_section(sizes, folder, encoder, variants, onnx, test_texts, train_texts)
    accuracy = print_offline(bulk, train_labels, test_labels, roof_share)
    if onnx_note:
        print(f"\nnote: {onnx_note}")
    servers = serving_section(sizes, encoder, variants, onnx, test_texts, roof_share)
    print_targets(bulk, accuracy, servers)


def print_offline(
    bulk: dict[str, tuple[BulkResult, np.ndarray | None]],
    train_labels: list[str],
    test_labels: list[str],
    roof_share: Callable[[float], str],
) -> dict[str, float]:
    """The offline table; returns each backend's nearest-centroid accuracy (where measured)."""
    st = bulk[ST][0]
    reference = bulk[TORCH][0].embeddings
    accuracy = {
        label: centroid_accuracy(train, train_labels, result.embeddings, test_labels)
        for label, (result, train) in bulk.items()
        if train is not None
    }
    rows = [
        [
            label,
            result.throughput,
            f"{result.throughput / st.throughput:.2f}x",
            mean_cosine(result.embeddings, reference),
            f"{100 * accuracy[label]:.1f}" if label in accuracy else None,
            roof_share(result.throughput),
        ]
        for label, (result, _train) in bulk.items()
    ]
    print_table(
        f"Offline encoding of {st.texts} Banking77 sentences (batch 32, tokenisation included)",
        ["backend", "sentences/s", "vs ST", "cos vs fp32", "centroid acc %", "of roof"],
        rows,
    )
    return accuracy


def offline_section(
    sizes: Sizes,
    folder: Path,
    encoder: Any,
    variants: dict[str, Any],
    onnx: dict[str, Any],
    texts: list[str],
    train_texts: list[str],
) -> dict[str, tuple[BulkResult, np.ndarray | None]]:
    """Each backend's timing on `texts`, and its train embeddings for the accuracy check."""
    from sentence_transformers import SentenceTransformer

    from core.ml.offline import stream_predictions

    st_model = SentenceTransformer(str(folder), device="cpu")
    backends = {
        ST: lambda t: st_model.encode(list(t), batch_size=32),
        TORCH: lambda t: encoder.encode(t, batch_size=32),
        "torch fp32 stream_predictions": lambda t: np.concatenate(
            list(stream_predictions(encoder, t, batch_size=32))
        ),
        **{
            label: (lambda t, e=e: e.encode(t, batch_size=32))
            for label, e in (variants | onnx).items()
        },
    }
    # Accuracy only where the numbers can differ: our torch paths and the ONNX exports.
    train = {
        label: encode(train_texts) for label, encode in backends.items()
        if label in (TORCH, BF16) or label in onnx
    }  # fmt: skip
    timed = time_encoders(backends, texts, sizes.repeats)
    return {label: (result, train.get(label)) for label, result in timed.items()}


def serving_section(
    sizes: Sizes,
    encoder: Any,
    variants: dict[str, Any],
    onnx: dict[str, Any],
    texts: list[str],
    roof_share: Callable[[float], str],
) -> dict[str, Served]:
    """Each server at each client count, beside one-at-a-time calls of the same model.

    A batching engine is compared with the naive server running the same weights (bf16 with
    bf16, int8 with int8): that ratio is what batching buys. The fp32 one-at-a-time server is
    also printed beside every row, as the plain deployment a user starts from.
    """
    seconds, levels = sizes.serving_seconds, sizes.levels
    default = BatchingConfig()
    models = {NAIVE: encoder, NAIVE_BF16: variants[BF16]}
    if INT8 in onnx:
        models[NAIVE_INT8] = onnx[INT8]
    naive = {
        label: asyncio.run(measure_naive(model, texts, levels, seconds))
        for label, model in models.items()
    }
    engines = {
        f"engine torch, wait {default.max_wait_ms:g} ms": (encoder, default, NAIVE),
        "engine torch, wait 0 ms": (encoder, BatchingConfig(max_wait_ms=0), NAIVE),
        # At one text a call there is no padding, so packing's baseline is the same server.
        f"engine {PADDED}, wait 0 ms": (variants[PADDED], BatchingConfig(max_wait_ms=0), NAIVE),
        "engine torch bf16, wait 0 ms": (variants[BF16], BatchingConfig(max_wait_ms=0), NAIVE_BF16),
    }
    if INT8 in onnx:
        int8_engine = f"engine {INT8}, wait {default.max_wait_ms:g} ms"
        engines[int8_engine] = (onnx[INT8], default, NAIVE_INT8)
    servers = {label: Served(results, label) for label, results in naive.items()}
    for label, (predictor, config, baseline) in engines.items():
        results = asyncio.run(measure_engine(predictor, texts, levels, seconds, config))
        servers[label] = Served(results, baseline)
    rows = [
        [
            n,
            label,
            served.results[n].throughput,
            served.results[n].p50_ms,
            served.results[n].p99_ms,
            None if served.baseline == label else f"{served.ratio(servers, n):.2f}x",
            f"{served.results[n].throughput / naive[NAIVE][n].throughput:.2f}x",
            roof_share(served.results[n].throughput),
        ]
        for n in levels
        for label, served in servers.items()
    ]
    print_table(
        f"Serving single Banking77 sentences, closed-loop clients, {seconds:g} s per row "
        f"(batch {default.max_batch_size}, budget {default.max_batch_tokens} padded tokens)",
        ["clients", "server", "req/s", "p50 ms", "p99 ms", "vs same model one-at-a-time",
         "vs fp32 one-at-a-time", "of roof"],
        rows,
    )  # fmt: skip
    return servers


def print_targets(
    bulk: dict[str, tuple[BulkResult, np.ndarray | None]],
    accuracy: dict[str, float],
    servers: dict[str, Served],
) -> None:
    """The issue's targets against this run's figures (32 clients; offline vs ST)."""
    st = bulk[ST][0].throughput
    rows = []
    for label, served in servers.items():
        if served.baseline != label and 32 in served.results:
            ratio, p99 = served.ratio(servers, 32), served.results[32].p99_ms
            target = f">= 5x {served.baseline}"
            rows.append([f"{label} @32: throughput", target, f"{ratio:.2f}x", ratio >= 5])
            rows.append([f"{label} @32: p99", "< 100 ms", f"{p99:.0f} ms", p99 < 100])
    ours = bulk[TORCH][0].throughput / st
    rows.append(["offline torch fp32", ">= 1x sentence-transformers", f"{ours:.2f}x", ours >= 1])
    bf16_drop = 100 * (accuracy[TORCH] - accuracy[BF16])
    rows.append([f"{BF16} accuracy drop", "<= 1 point", f"{bf16_drop:.1f} points", bf16_drop <= 1])
    if INT8 in bulk:
        speed = bulk[INT8][0].throughput / st
        drop = 100 * (accuracy[TORCH] - accuracy[INT8])
        rows.append(
            [f"offline {INT8}", ">= 2.5x sentence-transformers", f"{speed:.2f}x", speed >= 2.5]
        )
        rows.append([f"{INT8} accuracy drop", "<= 1 point", f"{drop:.1f} points", drop <= 1])
    print_table("Targets", ["figure", "target", "this run", "met"], rows)


if __name__ == "__main__":
    main()
