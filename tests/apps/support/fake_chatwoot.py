"""A local fake Chatwoot: the two API calls the bot makes, answered in Chatwoot's format.

It runs a real HTTP server (uvicorn on 127.0.0.1, in a thread), records every request it
gets, checks the `api_access_token` header like Chatwoot does, and fails on demand: the next
N calls answer an error, or the whole server goes down and comes back on the same port.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

CONVERSATION_STATUSES = ("open", "resolved", "pending", "snoozed")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerThread:
    """An ASGI app served by uvicorn on 127.0.0.1 from a background thread."""

    def __init__(self, app: Any, *, lifespan: str = "off") -> None:
        self.app, self.lifespan = app, lifespan
        self.port = free_port()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Serve (again) on the same port; returns once the server accepts connections."""
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_config=None,  # leave the test's logging alone
            log_level="warning",
            access_log=False,
            lifespan=self.lifespan,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="fake-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the fake server did not start on port {self.port}")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop serving: connections to the port are refused until `start()`."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._server = self._thread = None


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    json: Any
    status_code: int  # what the fake answered


@dataclass(frozen=True)
class _Failure:
    status_code: int
    body: dict[str, Any]
    path_contains: str


class FakeChatwoot:
    """`POST .../conversations/{id}/messages` and `.../toggle_status`, as Chatwoot answers them."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.statuses: dict[int, str] = {}  # conversation id -> status after toggle_status
        self._requests: list[RecordedRequest] = []
        self._failures: deque[_Failure] = deque()
        self._lock = threading.Lock()
        self._next_message_id = 9000
        self._hangs, self._hang_s = 0, 0.0
        self.server = ServerThread(self._build_app())

    @property
    def url(self) -> str:
        return self.server.url

    # --- control ------------------------------------------------------------------------------

    def start(self) -> FakeChatwoot:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def fail_next(
        self,
        times: int,
        status_code: int = 503,
        body: dict[str, Any] | None = None,
        *,
        path_contains: str = "",
    ) -> None:
        """The next `times` calls (whose path contains `path_contains`) answer `status_code`."""
        failure = _Failure(status_code, body or {"error": "Service Unavailable"}, path_contains)
        with self._lock:
            self._failures.extend([failure] * times)

    def hang_next(self, times: int, seconds: float) -> None:
        """The next `times` calls hang for `seconds`, then fail unprocessed (504), as an
        overloaded Chatwoot behind a proxy does."""
        with self._lock:
            self._hangs += times
        self._hang_s = seconds

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def delivered(self) -> list[RecordedRequest]:
        """The requests Chatwoot accepted (2xx)."""
        return [r for r in self.requests if 200 <= r.status_code < 300]

    # --- the API ------------------------------------------------------------------------------

    def _build_app(self) -> FastAPI:
        app = FastAPI()
        base = "/api/v1/accounts/{account_id}/conversations/{conversation_id}"

        @app.post(f"{base}/messages")
        async def create_message(account_id: int, conversation_id: int, request: Request):
            return await self._handle(request, lambda body: self._message(conversation_id, body))

        @app.post(f"{base}/toggle_status")
        async def toggle_status(account_id: int, conversation_id: int, request: Request):
            return await self._handle(request, lambda body: self._toggle(conversation_id, body))

        @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
        async def anything_else(path: str, request: Request):
            return await self._handle(
                request, lambda _body: (404, {"error": "Resource could not be found"})
            )

        return app

    async def _handle(self, request: Request, route: Any) -> JSONResponse:
        raw = await request.body()
        with self._lock:
            hang, self._hangs = self._hangs > 0, max(self._hangs - 1, 0)
        if hang:
            await asyncio.sleep(self._hang_s)
            route = lambda _body: (504, {"error": "Gateway Timeout"})  # noqa: E731
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        status_code, answer = self._answer(request, body, route)
        with self._lock:
            self._requests.append(
                RecordedRequest(
                    method=request.method,
                    path=request.url.path,
                    headers={k.lower(): v for k, v in request.headers.items()},
                    json=body,
                    status_code=status_code,
                )
            )
        return JSONResponse(answer, status_code=status_code)

    def _answer(self, request: Request, body: Any, route: Any) -> tuple[int, dict[str, Any]]:
        with self._lock:
            for failure in list(self._failures):
                if failure.path_contains in request.url.path:
                    self._failures.remove(failure)
                    return failure.status_code, failure.body
        if request.headers.get("api_access_token") != self.token:
            return 401, {"error": "Invalid Access Token"}
        if not isinstance(body, dict):
            return 400, {"error": "Request body must be a JSON object"}
        return route(body)

    def _message(self, conversation_id: int, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        content = body.get("content")
        if not isinstance(content, str) or not content:
            return 422, {"message": "Content can't be blank"}
        if body.get("message_type", "outgoing") not in ("outgoing", "incoming", "template"):
            return 422, {"message": f"'{body.get('message_type')}' is not a valid message_type"}
        with self._lock:
            self._next_message_id += 1
            message_id = self._next_message_id
        return 200, {
            "id": message_id,
            "content": content,
            "inbox_id": 3,
            "conversation_id": conversation_id,
            "message_type": 1,
            "content_type": "text",
            "status": "sent",
            "content_attributes": {},
            "created_at": int(time.time()),
            "private": bool(body.get("private", False)),
            "source_id": None,
            "sender": {"id": 1, "name": "textsuite bot", "type": "agent_bot"},
        }

    def _toggle(self, conversation_id: int, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        status = body.get("status")
        if status not in CONVERSATION_STATUSES:
            return 422, {"message": f"'{status}' is not a valid status"}
        with self._lock:
            self.statuses[conversation_id] = status
        return 200, {
            "meta": {},
            "payload": {
                "success": True,
                "current_status": status,
                "conversation_id": conversation_id,
            },
        }
