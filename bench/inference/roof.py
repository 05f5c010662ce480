"""The CPU's roof for this workload: large fp32 matmul throughput, and FLOPs per token."""

from __future__ import annotations

import time

import torch


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Best GFLOP/s of an (n, n) @ (n, n) fp32 matmul with torch's own threads."""
    a = torch.randn(n, n)  # (n, n)
    b = torch.randn(n, n)  # (n, n)
    torch.mm(a, b)  # warm-up: thread pool and caches
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)  # (n, n)
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best / 1e9


def flops_per_token(model: torch.nn.Module) -> float:
    """About 2 x the parameters that multiply each token (embedding tables are look-ups).

    Attention scores add 4 x length x hidden per layer, small next to this for short texts,
    so the figure is a slight underestimate of the work done.
    """
    multiplying = sum(p.numel() for name, p in model.named_parameters() if "embeddings" not in name)
    return 2.0 * multiplying
