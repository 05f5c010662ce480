"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from sqlalchemy import text

ReadinessCheck = Callable[[], str | None]
"""Returns when healthy (with a note where ready is not the whole story: no model trained
yet), raises with a readable message when not."""

log = logging.getLogger(__name__)
router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness: the process answers")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: database, broker and the other dependencies answer",
    responses={503: {"description": "a dependency is down; `checks` says which and why"}},
)
def readyz(request: Request) -> JSONResponse:
    results: dict[str, str] = {}
    ready = True
    for name, check in readiness_checks(request).items():
        try:
            note = check()
            results[name] = "ok" if note is None else f"ok: {note}"
        except Exception as exc:
            results[name] = _reason(exc)
            log.warning("readiness check %s failed: %s", name, exc)  # the whole of it
            ready = False
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": results},
        status_code=200 if ready else 503,
    )


def _reason(exc: Exception) -> str:
    """A failed check in a line: a database error's own message (the driver's), without the
    statement and SQLAlchemy's pointer to its docs; the log keeps all of it."""
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0][:300] if lines else '(no message)'}"


def readiness_checks(request: Request) -> Mapping[str, ReadinessCheck]:
    state = request.app.state

    def database() -> None:
        with state.session_factory() as session:
            session.execute(text("SELECT 1"))

    checks: dict[str, ReadinessCheck] = {"database": database}
    ping = getattr(state.dispatcher, "ping", None)
    if ping is not None:
        checks["broker"] = ping
    checks.update(state.extra_readiness_checks)
    return checks


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
