"""ASGI middleware: request size limit, latency metrics by route template, request ids."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.logs import REQUEST_ID
from core.metrics import HTTP_REQUEST_DURATION
from core.validation import UnfitJson, strict_json_loads

try:  # FastAPI that includes routers lazily: a route's own path lacks its routers' prefixes
    from fastapi.routing import iter_route_contexts
except ImportError:  # earlier FastAPI copies each included route with its whole path
    iter_route_contexts = None

log = logging.getLogger("textsuite.http")


class _BodyTooLarge(Exception):
    pass


async def _send_json(send: Send, status: int, body: dict[str, object]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


# File imports (`POST .../import`): whole catalogues and event logs, allowed a larger body.
IMPORT_SUFFIX = "/import"


class BodySizeLimit:
    """Answers 413 to bodies above the limit, declared or streamed, before a handler reads it:
    `import_max_bytes` for file imports (paths ending in `/import`), `max_bytes` for the rest."""

    def __init__(self, app: ASGIApp, max_bytes: int, import_max_bytes: int) -> None:
        self.app, self.max_bytes, self.import_max_bytes = app, max_bytes, import_max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"].rstrip("/").endswith(IMPORT_SUFFIX):
            limit, setting = self.import_max_bytes, "TEXTSUITE_MAX_IMPORT_BYTES"
        else:
            limit, setting = self.max_bytes, "TEXTSUITE_MAX_REQUEST_BYTES"
        message = (
            f"request body larger than the limit of {limit} bytes ({setting}); "
            "send a larger batch in parts, or as a file to the app's import endpoint"
        )
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _send_json(send, 413, {"detail": message})
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            incoming = await receive()
            if incoming["type"] == "http.request":
                received += len(incoming.get("body", b""))
                if received > limit:
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


def _is_json(scope: Scope) -> bool:
    content_type = dict(scope["headers"]).get(b"content-type", b"").decode("latin-1")
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


class StrictJsonBodies:
    """Answers 422 to a JSON body the apps could store but not send back, before a handler
    reads it: NaN or Infinity, a number beyond a float's range, a lone surrogate, nesting
    deeper than `MAX_JSON_DEPTH` (`core.validation.strict_json_loads`). FastAPI's reader
    takes them all; stored in a free-form field (metadata, job parameters), they used to
    break every later answer that listed it. Syntax errors are left to FastAPI's own 422."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        if not _is_json(scope):
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left: let the app see it
                await self.app(scope, _replay([message], receive), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            strict_json_loads(body)
        except UnfitJson as exc:
            error = {"type": "json_invalid", "loc": ["body"], "msg": str(exc)}
            await _send_json(send, 422, {"detail": [error]})
            return
        except ValueError:
            pass  # not JSON at all: FastAPI's own 422 says where it breaks
        await self.app(scope, _replay([{"type": "http.request", "body": body}], receive), send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A `receive` that gives `messages` first, then whatever the client sends next."""
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed


def route_templates(app: Any) -> dict[int, str]:
    """id(route) -> its whole path template ("/v1/sentiment/stats", where the route itself
    says "/stats"), for the routes of a FastAPI `app`."""
    if iter_route_contexts is None:
        return {}
    return {
        id(context.original_route): context.path
        for context in iter_route_contexts(app.routes)
        if context.path
    }


class RequestMetrics:
    """Observes latency per route template (not per URL, to keep label cardinality bounded)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._templates: dict[int, str] | None = None  # read at the first request

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
            if self._templates is None and "app" in scope:
                self._templates = route_templates(scope["app"])
            template = (self._templates or {}).get(id(route)) or getattr(route, "path", "unmatched")
            elapsed = time.perf_counter() - started
            HTTP_REQUEST_DURATION.labels(scope["method"], template, str(status)).observe(elapsed)
            log.debug("%s %s -> %s in %.1f ms", scope["method"], template, status, elapsed * 1e3)


class RequestIds:
    """Gives each request an id: the caller's `X-Request-ID` when it sends a usable one, else
    a new one; echoed in the response and in every log line of the request (`request_id`)."""

    HEADER = b"x-request-id"

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = dict(scope.get("headers") or []).get(self.HEADER, b"").decode("latin-1")
        request_id = sent if _USABLE_ID.fullmatch(sent) else uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)

        async def tagged_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (self.HEADER, request_id.encode())]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, tagged_send)
        finally:
            REQUEST_ID.reset(token)


# A caller's id is kept when it is a plain token (a UUID, a trace id): nothing that could
# forge a log line or a header.
_USABLE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
