"""The FastAPI app factory every deployment goes through."""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from importlib import metadata

from fastapi import APIRouter, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DataError, InterfaceError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.api import docs, health, jobs, models
from core.api.health import ReadinessCheck
from core.api.middleware import BodySizeLimit, RequestIds, RequestMetrics, StrictJsonBodies
from core.jobs import DispatchError, JobDispatcher
from core.ml.batching import BatcherStopped, Overloaded
from core.runtime import freeze_long_lived
from core.scheduling import periodic, redispatch_work
from core.security import KeyCache, RateLimiter, ensure_api_key
from core.settings import Settings
from core.storage import get_session_factory, session_scope
from core.storage.models import Scope
from core.validation import error_details

log = logging.getLogger(__name__)

AppLifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def create_app(
    settings: Settings,
    *,
    dispatcher: JobDispatcher,
    routers: Sequence[APIRouter] = (),
    readiness_checks: Mapping[str, ReadinessCheck] | None = None,
    lifespans: Sequence[AppLifespan] = (),
) -> FastAPI:
    """The HTTP service: operations and jobs routes, plus the apps' `routers`.

    `dispatcher` runs submitted jobs (Celery, or threads in this process); it is closed when
    the app shuts down. Each of `lifespans` is entered at start-up, in order (an app loads its
    models and starts its batchers there), and left at shutdown in reverse order.
    """
    factory = get_session_factory(settings.database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _bootstrap_key(settings, factory)
        async with AsyncExitStack() as stack:
            for app_lifespan in lifespans:
                await stack.enter_async_context(app_lifespan(app))
            log.info("start-up done; %d long-lived objects frozen", freeze_long_lived(collect=True))
            work = redispatch_work(settings, factory, dispatcher)
            await stack.enter_async_context(periodic(settings, work))
            yield
        close = getattr(dispatcher, "close", None)
        if close is not None:
            close()

    app = FastAPI(
        title="textsuite",
        version=metadata.version("textsuite"),
        summary="Support bot, news sentiment monitor and recommender on one model core.",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's pages load from a CDN: core.api.docs serves them offline
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.session_factory = factory
    app.state.dispatcher = dispatcher
    app.state.api_keys = KeyCache(settings.api_key_cache_s)
    app.state.rate_limiter = RateLimiter()
    app.state.extra_readiness_checks = dict(readiness_checks or {})
    app.add_middleware(StrictJsonBodies)  # inside the size limit: reads no more than it allows
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_request_bytes,
        import_max_bytes=settings.max_import_bytes,
    )
    app.add_middleware(RequestMetrics)
    app.add_middleware(RequestIds)  # outermost: every line of the request carries its id
    app.include_router(docs.router)
    app.include_router(health.router)
    app.include_router(jobs.router)
    app.include_router(models.router)
    for router in routers:
        app.include_router(router)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(DataError, _unstorable_value)
    app.add_exception_handler(OperationalError, _database_unreachable)
    app.add_exception_handler(ProgrammingError, _behind_migrations)
    app.add_exception_handler(InterfaceError, _database_unreachable)
    app.add_exception_handler(Overloaded, _overloaded)
    app.add_exception_handler(BatcherStopped, _model_unavailable)
    app.add_exception_handler(DispatchError, _broker_unreachable)
    return app


async def _broker_unreachable(_request: Request, exc: Exception) -> JSONResponse:
    """A job the request asked for could not be queued (the broker is away): a 503 the client
    can retry. The job is marked failed; a retry sends a new one, or, under the same
    idempotency key, that one."""
    log.warning("a job could not be queued: %s", exc)
    return _retry_later(f"the job could not be queued, try again later: {exc}", 5)


async def _overloaded(_request: Request, exc: Exception) -> JSONResponse:
    """Back-pressure from a model's batcher: a clear 503 the client can retry, never a backlog."""
    retry_after = max(1, math.ceil(getattr(exc, "retry_after_s", 1.0)))
    return _retry_later(str(exc), retry_after)


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """422 naming each problem's place, message and kind. Unlike FastAPI's default it does not
    echo the rejected input: that can be megabytes, or hold what JSON cannot carry back (a
    lone surrogate, NaN), which turned a client's mistake into a 500.

    A JSON body sent as something else (curl's default form encoding, text/plain) reaches
    validation as bytes, and "Input should be a valid dictionary" would not say why: that is
    a 415 naming the content type to send."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    # A body of one shape or another (one article or a batch) reports it under each shape.
    if any(e["loc"][:1] == ("body",) and isinstance(e.get("input"), bytes) for e in errors):
        sent = request.headers.get("content-type") or "none"
        return JSONResponse(
            {
                "detail": "send the body as JSON with 'Content-Type: application/json' "
                f"(this request's Content-Type: {sent})"
            },
            status_code=415,
        )
    return JSONResponse({"detail": error_details(errors)}, status_code=422)


# What FastAPI answers when reading a JSON body fails other than by its syntax.
_UNREADABLE_BODY = "There was an error parsing the body"


async def _http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's answer to an HTTP error, except a JSON body it could not read: a 422 saying
    why (not UTF-8, a number too long for Python, nesting too deep), as a syntax error
    in it gets, instead of a 400 that does not."""
    assert isinstance(exc, StarletteHTTPException)
    cause = exc.__cause__
    if exc.status_code != 400 or exc.detail != _UNREADABLE_BODY or cause is None:
        return await http_exception_handler(request, exc)
    if isinstance(cause, UnicodeDecodeError):
        why = f"the body is not valid UTF-8 ({cause.reason} at byte {cause.start})"
    elif isinstance(cause, RecursionError):
        why = "the body's JSON is nested too deeply"
    elif "digits" in str(cause):
        why = (
            f"a number in the body is too long (more than {sys.get_int_max_str_digits():,} digits)"
        )
    else:
        why = f"the body cannot be read as JSON ({type(cause).__name__})"
    error = {"type": "json_invalid", "loc": ["body"], "msg": why}
    return JSONResponse({"detail": [error]}, status_code=422)


# Text the database cannot hold: untranslatable_character (a \u0000 in JSON), and
# character_not_in_repertoire; psycopg refuses NUL in text itself, with no SQLSTATE.
_UNSTORABLE_TEXT = {"22P05", "22021"}


async def _unstorable_value(_request: Request, exc: Exception) -> JSONResponse:
    """The database refused a character of the request (PostgreSQL stores no NUL): the
    transaction is rolled back, and the client learns which rule the value broke. Any other
    data error stays a 500: it comes from a value the server made, which is a bug to see."""
    orig = getattr(exc, "orig", None)
    reason = str(orig or exc).splitlines()[0]
    if getattr(orig, "sqlstate", None) not in _UNSTORABLE_TEXT and "NUL" not in reason:
        raise exc
    log.info("refused a value the database cannot store: %s", reason)
    return JSONResponse(
        {"detail": f"the request holds a value the database cannot store: {reason}"},
        status_code=422,
    )


# A table or column the code needs is missing: the database is behind the code's migrations
# (SQLite says so in words; PostgreSQL's undefined_table and undefined_column).
_NOT_MIGRATED_STATES = frozenset({"42P01", "42703"})


def _not_migrated(exc: Exception) -> bool:
    orig = getattr(exc, "orig", None)
    if getattr(orig, "sqlstate", None) in _NOT_MIGRATED_STATES:
        return True
    return isinstance(exc, OperationalError) and "no such " in str(orig or exc)


async def _behind_migrations(_request: Request, exc: Exception) -> JSONResponse:
    """A 503 that says what to do, not "unreachable" (a ProgrammingError of another kind is
    a bug: raised on, a 500)."""
    if not _not_migrated(exc):
        raise exc
    log.error("the database is not migrated: %s", getattr(exc, "orig", None) or exc)
    return _retry_later("the database is not migrated to this version: run `textsuite migrate`", 60)


async def _database_unreachable(request: Request, exc: Exception) -> JSONResponse:
    """The database went away (a restart, the network): a clean 503 the client can retry.
    Once it is back, the pool's pre-ping replaces the broken connections; no restart needed."""
    if _not_migrated(exc):
        return await _behind_migrations(request, exc)
    log.warning("database unreachable: %s", getattr(exc, "orig", None) or exc)
    return _retry_later("the database is unreachable right now; retry later", 5)


def _retry_later(detail: str, after_s: int) -> JSONResponse:
    """503 with `Retry-After`: nothing was done, and the same request may succeed later."""
    return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": str(after_s)})


async def _model_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    return _retry_later(f"model not available: {exc}", 5)


def _bootstrap_key(settings: Settings, factory: sessionmaker[Session]) -> None:
    key = settings.bootstrap_api_key
    if key is None:
        return
    try:
        with session_scope(factory) as session:
            ensure_api_key(session, key.get_secret_value(), "bootstrap", [Scope.ADMIN])
    except (OperationalError, ProgrammingError) as exc:
        raise RuntimeError(
            f"cannot store TEXTSUITE_BOOTSTRAP_API_KEY: the database is not ready ({exc.orig}); "
            "run `textsuite migrate` first"
        ) from exc
