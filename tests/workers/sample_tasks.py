"""Tasks used by the worker tests; workers load them through TEXTSUITE_WORKER_IMPORTS.

Their side effects go to files named in the job's parameters, so a test can count how many
times a body really ran, across processes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from core.jobs import JobContext, TransientJobError
from core.metrics import BATCH_QUEUE_DEPTH
from workers.registry import job_task


def _append(path: str, line: str) -> int:
    with Path(path).open("a") as handle:
        handle.write(line + "\n")
    return len(Path(path).read_text().splitlines())


@job_task("tests.append_line")
def append_line(ctx: JobContext) -> dict[str, Any]:
    """Appends one line per execution; sleeps first so a duplicate delivery can overlap."""
    time.sleep(float(ctx.params.get("sleep_s", 0)))
    ctx.progress(0.5, "writing")
    return {"lines": _append(ctx.params["path"], str(ctx.job_id))}


@job_task("tests.queue_depth")
def queue_depth(ctx: JobContext) -> None:
    """Reports a batcher's queue depth from whichever process runs the job."""
    BATCH_QUEUE_DEPTH.labels(ctx.params["batcher"]).set(ctx.params["depth"])


@job_task("tests.fail", max_retries=0)
def fail(ctx: JobContext) -> None:
    raise ValueError(f"cannot parse row {ctx.params.get('row', 7)}: expected 3 columns")


@job_task("tests.flaky", max_retries=3, retry_backoff_s=0.05)
def flaky(ctx: JobContext) -> dict[str, Any]:
    """Fails transiently until its `succeed_on`-th attempt."""
    attempts = _append(ctx.params["path"], "attempt")
    if attempts < ctx.params["succeed_on"]:
        raise TransientJobError(f"helpdesk unreachable (attempt {attempts})")
    return {"attempts": attempts}


@job_task("tests.gpu_echo", queue="gpu")
def gpu_echo(ctx: JobContext) -> dict[str, Any]:
    return {"echo": ctx.params.get("value")}


@job_task("tests.gpu_hold", queue="gpu")
def gpu_hold(ctx: JobContext) -> dict[str, Any]:
    """Holds the gpu queue, as a training job would, until the file `until` exists."""
    release, deadline = Path(ctx.params["until"]), time.monotonic() + 20
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return {"released": release.exists()}


@job_task("tests.inference_echo", queue="inference")
def inference_echo(ctx: JobContext) -> dict[str, Any]:
    return {"echo": ctx.params.get("value")}


@job_task("tests.unreachable", max_retries=5, retry_backoff_s=30.0)
def unreachable(ctx: JobContext) -> None:
    """A target that is down: every attempt fails transiently, with a long backoff."""
    raise TransientJobError("cannot reach the target: connection refused")
