"""Structured logging: JSON lines in production, readable lines at a terminal."""

from __future__ import annotations

import logging
import os
import sys
from contextvars import ContextVar

from pythonjsonlogger.json import JsonFormatter

from core.privacy import PersonalDataFilter
from core.settings import LogFormat, Settings

# The id of the HTTP request being served (`core.api.middleware.RequestIds`), or None.
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)


class RequestIdFilter(logging.Filter):
    """Gives each record the id of the request it was logged in (`request_id`, in JSON
    lines; None outside a request), so one request's lines can be found together."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


def _without_progress_bars() -> None:
    """Transformers' own bars ("Loading weights") read no environment once imported: turned
    off in the library itself. (A Celery worker would log each redraw as a WARNING.)"""
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as transformers_logging

    disable_progress_bars()
    transformers_logging.disable_progress_bar()


def configure_logging(settings: Settings) -> None:
    """Route every logger (ours, uvicorn's, Celery's) through one handler on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format is LogFormat.JSON:
        handler.setFormatter(
            JsonFormatter(
                "{levelname}{name}{message}",
                style="{",
                rename_fields={"levelname": "level", "name": "logger"},
                timestamp="time",  # ISO 8601 in UTC, with its offset
            )
        )
        # One JSON object per line: no progress bars (loading a model's weights) between.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TQDM_DISABLE", "1")
        _without_progress_bars()
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(PersonalDataFilter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # The readiness probe reads the migration state on every call; keep that out of the logs.
    logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
