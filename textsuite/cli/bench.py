"""`textsuite bench NAME [ARGS]`: run a benchmark of the checkout's `bench/` folder."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path
from typing import Annotated

import typer

from textsuite.cli.common import fail

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"


def names() -> list[str]:
    return sorted(p.parent.name for p in BENCH_DIR.glob("*/__main__.py"))


def bench(
    name: Annotated[str, typer.Argument(help="The benchmark: a folder of bench/")],
    arguments: Annotated[
        list[str] | None, typer.Argument(help="The benchmark's own options (after --)")
    ] = None,
) -> None:
    """Run a benchmark of the checkout (`python -m bench.NAME`): finetune, inference, load,
    recommend, sentiment, support, gpu_check. Each measures its baseline in the same run;
    `textsuite bench NAME -- --help` lists its options."""
    known = names()
    if not known:
        fail("benchmarks live in a checkout's bench/ folder; run this from a clone of textsuite")
    if name not in known:
        fail(f"unknown benchmark {name!r}; expected one of {', '.join(known)}")
    saved_argv, saved_path = sys.argv, list(sys.path)
    if str(BENCH_DIR.parent) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR.parent))
    try:
        sys.argv = [f"textsuite bench {name}", *(arguments or [])]
        runpy.run_module(f"bench.{name}", run_name="__main__", alter_sys=True)
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
