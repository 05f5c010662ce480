"""Structured logging: JSON lines in production, readable lines at a terminal."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

from core.privacy import PersonalDataFilter
from core.settings import LogFormat, Settings


def configure_logging(settings: Settings) -> None:
    """Route every logger (ours, uvicorn's, Celery's) through one handler on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format is LogFormat.JSON:
        handler.setFormatter(
            JsonFormatter(
                "{asctime}{levelname}{name}{message}",
                style="{",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(PersonalDataFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # The readiness probe reads the migration state on every call; keep that out of the logs.
    logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
