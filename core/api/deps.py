"""Typed FastAPI dependencies: settings, a database session, the caller's API key and scope."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.security import APIKeyCookie, APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from core.jobs import JobDispatcher
from core.security import KeyCache, authenticate, session_key
from core.settings import Settings
from core.storage.base import utcnow
from core.storage.models import ApiKey, Scope
from core.validation import not_before_1970


# The small dependencies are `async def`: FastAPI runs a plain `def` dependency in the thread
# pool, and a hop there per dependency costs more than what they do.
async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.session_factory() as session:
        yield session


async def get_session_factory(request: Request) -> sessionmaker[Session]:
    return request.app.state.session_factory


async def get_dispatcher(request: Request) -> JobDispatcher:
    return request.app.state.dispatcher


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
SessionFactoryDep = Annotated[sessionmaker[Session], Depends(get_session_factory)]
DispatcherDep = Annotated[JobDispatcher, Depends(get_dispatcher)]

_api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="An API key from `textsuite keys create`."
)
_bearer = HTTPBearer(auto_error=False, description="The same API key as a bearer token.")
# Browsers (the dashboard) hold a session in an HttpOnly, SameSite=Strict cookie set at login:
# signed for the key, ending after `SESSION_TTL_S`, good for the sentiment API only.
KEY_COOKIE = "textsuite_session"
SESSION_TTL_S = 12 * 3600
SESSION_SCOPES = (Scope.SENTIMENT,)
_cookie = APIKeyCookie(
    name=KEY_COOKIE,
    auto_error=False,
    description="The dashboard's session, as its login sets it (the sentiment API only).",
)


async def current_api_key(
    request: Request,
    header_key: Annotated[str | None, Depends(_api_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    cookie_key: Annotated[str | None, Depends(_cookie)],
) -> ApiKey:
    key = header_key or (bearer.credentials if bearer else None)
    from_session = key is None and cookie_key is not None
    key = key or cookie_key
    if not key:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing API key: send it as 'X-API-Key: <key>' or 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    cache: KeyCache = request.app.state.api_keys
    cached_as = f"session:{key}" if from_session else key  # a token sent as a key is no key
    record = cache.get(cached_as)
    if record is None:
        check = _session if from_session else _authenticate
        record = await run_in_threadpool(check, request.app.state.session_factory, key)
        if record is not None:
            cache.put(cached_as, record)
    if record is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "invalid or revoked API key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    rate = record.rate_limit_per_s
    if rate is None:
        rate = request.app.state.settings.rate_limit_per_s
    wait_s = request.app.state.rate_limiter.take(record.id, rate)
    if wait_s > 0:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"this API key is over its rate limit of {rate:g} requests/s; retry in {wait_s:.2f} s",
            headers={"Retry-After": str(max(1, math.ceil(wait_s)))},
        )
    return record


def _authenticate(factory: sessionmaker[Session], key: str) -> ApiKey | None:
    # A session of its own, closed at once: a request-scoped one would hold its connection
    # until the response, and concurrent requests whose handlers need another (the support
    # bot, the sentiment ingestor) would exhaust the pool and wait out its timeout.
    with factory() as session:
        return authenticate(session, key)


def _session(factory: sessionmaker[Session], token: str) -> ApiKey | None:
    """The key of a dashboard session, as a copy holding only `SESSION_SCOPES`: a session
    made by signing in with an admin key reaches no more than the dashboard needs."""
    with factory() as session:
        return dashboard_view(session_key(session, token))


def dashboard_view(record: ApiKey | None) -> ApiKey | None:
    """`record` with its scopes cut to the dashboard's (a detached copy; None stays None)."""
    if record is None:
        return None
    kept = [scope.value for scope in SESSION_SCOPES if record.grants(scope)]
    return ApiKey(id=record.id, name=record.name, prefix=record.prefix, key_hash=record.key_hash,
                  scopes=kept, rate_limit_per_s=record.rate_limit_per_s)  # fmt: skip


CurrentKey = Annotated[ApiKey, Depends(current_api_key)]
# What a route behind a key may answer besides its own, for the API's documentation.
KEY_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No API key, or one unknown or revoked"},
    403: {"description": "The key lacks this route's scope"},
    429: {"description": "The key is over its rate limit; `Retry-After` says when to retry"},
}


def require_scope(scope: Scope) -> Callable[[ApiKey], ApiKey]:
    """A dependency that lets through only keys holding `scope` (or `admin`)."""

    async def check(key: CurrentKey) -> ApiKey:
        if not key.grants(scope):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"this API key lacks the {scope.value!r} scope (it has: {', '.join(key.scopes)})",
            )
        return key

    return check


AdminKey = Annotated[ApiKey, Depends(require_scope(Scope.ADMIN))]


def scoped_router(scope: Scope, tag: str, *, prefix: str = "") -> APIRouter:
    """A router whose every route needs a key holding `scope`, documented as such."""
    return APIRouter(
        prefix=prefix,
        tags=[tag],
        responses=KEY_ERRORS,
        dependencies=[Depends(require_scope(scope))],
    )


def commit_or_conflict(session: Session, detail: str) -> None:
    """Commit; a unique constraint that refuses the change becomes 409 with `detail`."""
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise HTTPException(status.HTTP_409_CONFLICT, detail) from None


def unavailable(detail: str, retry_after_s: int) -> HTTPException:
    """503 with `Retry-After`: the request was fine, something it needs is not there yet
    (a model, a broker, a stream); nothing was stored, and the same request may succeed."""
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE, detail, headers={"Retry-After": str(retry_after_s)}
    )


async def _raw_body(request: Request) -> bytes:
    return await request.body()


# The request body as bytes, read before a sync route runs (in the thread pool, so parsing and
# storing a large file never holds up the event loop).
RawBody = Annotated[bytes, Depends(_raw_body)]


# Paging through a list: `?limit=` rows after skipping `?offset=` (the next page starts at
# offset + limit).
Offset = Annotated[
    int, Query(ge=0, le=1_000_000_000, description="Skip this many (next page: offset + limit)")
]


def check_time_bounds(*bounds: dt.datetime | None) -> None:
    """`since`/`until` query values: aware, and not before 1970 (a 422 saying which rule)."""
    for bound in bounds:
        if bound is None:
            continue
        if bound.tzinfo is None:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                "since/until need a time zone, e.g. 2026-11-26T13:00:00Z",
            )
        try:
            not_before_1970(bound)
            bound.astimezone(dt.UTC)  # year 9999 with a negative offset is past what UTC holds
        except (ValueError, OverflowError) as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None


def check_period(since: dt.datetime | None, until: dt.datetime | None) -> None:
    """`check_time_bounds`, and since before until where both are given."""
    check_time_bounds(since, until)
    if since is not None and until is not None and not since < until:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "since must be before until")


ReportSince = Annotated[dt.datetime | None, Query(description="Default: 7 days before until")]
ReportUntil = Annotated[dt.datetime | None, Query(description="Default: now")]


def reporting_period(
    since: dt.datetime | None,
    until: dt.datetime | None,
    *,
    default_days: float = 7,
    max_days: float = 366,
) -> tuple[dt.datetime, dt.datetime]:
    """A report's [since, until) from its query values: until defaults to now, since to
    `default_days` before it; a 422 for bad bounds, an empty or a longer than `max_days` one."""
    check_time_bounds(since, until)
    until = until or utcnow()
    since = since or until - dt.timedelta(days=default_days)
    if not since < until or until - since > dt.timedelta(days=max_days):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"since must be before until, at most {max_days:g} days apart",
        )
    return since, until
