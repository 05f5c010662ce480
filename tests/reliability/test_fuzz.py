"""The whole HTTP API fuzzed from its own OpenAPI schema (schemathesis): whatever a client sends,
valid or not, it never gets a 500 — only 2xx/4xx, or a 503 that says when to retry (a model not
trained yet). Jobs that requests start are recorded, not run: training on fuzzed catalogues
would only cost minutes."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from tests.conftest import make_settings
from textsuite.service import create_service

# A server-sent event stream answers forever; tests/apps/sentiment covers it.
NEVER_ENDS = {("GET", "/v1/sentiment/alerts/stream")}
# Examples per operation, valid and invalid (more for a long run: TEXTSUITE_FUZZ_EXAMPLES=500).
EXAMPLES = int(os.environ.get("TEXTSUITE_FUZZ_EXAMPLES", "25"))
STATUSES: Counter[int] = Counter()


def _schema() -> Any:
    spec = create_service(make_settings(database_url="sqlite://")).openapi()
    loaded = schemathesis.openapi.from_dict(spec)
    for method, path in NEVER_ENDS:
        loaded = loaded.exclude(method=method, path=path)
    return loaded


schema = _schema()


def send(client: TestClient, case: Any, key: str) -> Any:
    request = case.as_transport_kwargs(base_url="http://testserver", headers={"X-API-Key": key})
    body = {}
    if "json" in request:
        body["json"] = request["json"]
    elif request.get("data") is not None:
        body["content"] = request["data"]
    if request.get("files"):
        body["files"] = request["files"]
    headers = dict(request.get("headers") or {})
    if request.get("cookies"):
        headers["cookie"] = "; ".join(f"{k}={v}" for k, v in request["cookies"].items())
    # Raw bytes, as any client may send: httpx itself refuses non-ASCII text in headers.
    headers = {k: v.encode() if isinstance(v, str) else v for k, v in headers.items()}
    return client.request(
        request["method"], request["url"], params=request.get("params"), headers=headers, **body
    )


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    print(f"\nfuzzed {sum(STATUSES.values())} requests: {dict(sorted(STATUSES.items()))}")


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_no_request_gets_a_server_error(case: Any, target: tuple[TestClient, str]) -> None:
    client, key = target
    response = send(client, case, key)
    STATUSES[response.status_code] += 1
    retry_later = response.status_code == 503 and "retry-after" in response.headers
    assert response.status_code < 500 or retry_later, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}\n"
        f"{case.as_curl_command()}"
    )


# What fuzzing found once, kept as plain regression cases.
FOUND = [
    # An offset past SQLite's 64-bit integers reached the database (500).
    ("GET", "/v1/recommend/items?offset=9223372036854775808", None, 422),
    # A version number past SQLite's 64-bit integers reached the database (500).
    ("POST", "/v1/models/m/promote", {"version": 9223372036854775808}, 422),
    # A helpdesk endpoint that is not configured is off (404), not an outage (503).
    ("POST", "/v1/support/chatwoot/webhook", {"event": "message_created"}, 404),
]


@pytest.mark.parametrize(("method", "url", "body", "expected"), FOUND)
def test_what_fuzzing_found_stays_fixed(
    target: tuple[TestClient, str], method: str, url: str, body: Any, expected: int
) -> None:
    client, key = target
    response = client.request(method, url, json=body, headers={"X-API-Key": key})
    assert response.status_code == expected, response.text
    assert response.json()["detail"]
