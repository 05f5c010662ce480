"""Diagnostics: what a worker runs on, so operators can check a GPU worker end to end."""

from __future__ import annotations

import platform
import socket
from importlib import metadata
from typing import Any

from pydantic import BaseModel, ConfigDict

from core.jobs import JobContext
from workers.registry import job_task


class WorkerInfoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    echo: Any = None  # returned as given: shows which submission a worker answered


@job_task("core.worker_info", queue="default", max_retries=0, params=WorkerInfoParams)
def worker_info(ctx: JobContext) -> dict[str, Any]:
    """Report host, Python and library versions, and which accelerator the worker sees."""
    ctx.progress(0.1, "inspecting the worker")
    info: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "python": platform.python_version(),
        "packages": {
            name: metadata.version(name)
            for name in ("torch", "transformers", "sentence-transformers", "celery")
        },
    }
    import torch  # imported here so that only the worker that runs this pays for it

    info["cuda_available"] = torch.cuda.is_available()
    info["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    if ctx.params.get("echo") is not None:
        info["echo"] = ctx.params["echo"]
    return info
