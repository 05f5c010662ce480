"""ASGI middleware: requests in progress, request size limit, latency metrics by route."""

from __future__ import annotations

import json
import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.metrics import HTTP_REQUEST_DURATION, HTTP_REQUESTS_SHED

log = logging.getLogger("textsuite.http")


class _BodyTooLarge(Exception):
    pass


async def _send_json(
    send: Send,
    status: int,
    body: dict[str, object],
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class MaxInFlight:
    """Answers 503 with `Retry-After` while `limit` requests are already being served.

    Past saturation more requests only wait in the server's queues (seconds, growing); a
    client told to come back can go to another replica or back off instead. Health checks,
    metrics and server-sent event streams (open for as long as a dashboard is) do not count.
    """

    EXEMPT = frozenset({"/healthz", "/readyz", "/metrics"})

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit
        self.in_flight = 0  # one event loop: no lock needed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.limit <= 0 or self._exempt(scope):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            HTTP_REQUESTS_SHED.inc()
            detail = (
                f"the service is serving its limit of {self.limit} requests at once "
                "(TEXTSUITE_MAX_IN_FLIGHT); nothing was done, retry shortly"
            )
            await _send_json(send, 503, {"detail": detail}, [(b"retry-after", b"1")])
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    def _exempt(self, scope: Scope) -> bool:
        accept = dict(scope["headers"]).get(b"accept", b"")
        return scope["path"] in self.EXEMPT or b"text/event-stream" in accept


class BodySizeLimit:
    """Answers 413 to bodies above `max_bytes`, declared or streamed, before a handler reads it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"request body larger than the limit of {self.max_bytes} bytes"
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _send_json(send, 413, {"detail": message})
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            incoming = await receive()
            if incoming["type"] == "http.request":
                received += len(incoming.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge
            return incoming

        async def tracking_send(outgoing: Message) -> None:
            nonlocal started
            started = started or outgoing["type"] == "http.response.start"
            await send(outgoing)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await _send_json(send, 413, {"detail": message})


class RequestMetrics:
    """Observes latency per route template (not per URL, to keep label cardinality bounded)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            elapsed = time.perf_counter() - started
            HTTP_REQUEST_DURATION.labels(scope["method"], template, str(status)).observe(elapsed)
            log.debug("%s %s -> %s in %.1f ms", scope["method"], template, status, elapsed * 1e3)
