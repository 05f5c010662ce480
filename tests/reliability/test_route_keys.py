"""Every route of the whole service, found by walking the app: without a key it answers 401,
with a key that lacks the route's scope 403, with a revoked key 401. The routes open without
a key are listed here by name, each with what protects it instead, so that a new route is
closed unless someone decides otherwise."""

from __future__ import annotations

import re
import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from core.security import create_api_key, revoke_api_key
from core.storage.engine import get_session_factory, session_scope
from core.storage.models import ApiKey

OPEN = {
    "/healthz": "liveness: says nothing but that the process answers",
    "/readyz": "readiness: names the dependencies that are down, no data",
    "/metrics": "Prometheus counters, no data (scraped from inside the network)",
    "/v1/support/chatwoot/webhook": "Chatwoot's HMAC signature headers, when a secret is set",
    "/v1/support/webhooks/messages": "an HMAC signature over a fresh timestamp, always",
}
METHODS = {"get", "post", "put", "patch", "delete"}
# Answers without end once let in (server-sent events): only refusals are checked here.
ENDLESS = {"/v1/sentiment/alerts/stream"}
SCOPE_OF_PREFIX = {
    "/v1/support": "support",
    "/v1/sentiment": "sentiment",
    "/v1/recommend": "recommend",
    "/v1/models": "admin",
    "POST /v1/jobs/": None,  # cancelling: any key that can see the job (its own scope)
    "POST /v1/jobs": "admin",
    "GET /v1/jobs": None,  # any key: a caller sees only the jobs of its own scopes
}


def routes(client: TestClient) -> list[tuple[str, str]]:
    """(method, path) of every route in the service's OpenAPI schema, path parameters filled
    in. (The dashboard's pages are outside it: they send to the sign-in page without a key,
    and read their data from these routes.)"""
    found = []
    for path, operations in client.app.openapi()["paths"].items():
        if path in OPEN:
            continue
        concrete = re.sub(r"\{[^}]+\}", str(uuid.UUID(int=1)), path)
        found += [(method.upper(), concrete) for method in operations if method in METHODS]
    return found


def scope_of(method: str, path: str) -> str | None:
    for prefix, scope in SCOPE_OF_PREFIX.items():
        if path.startswith(prefix) or f"{method} {path}".startswith(prefix):
            return scope
    raise AssertionError(f"{method} {path}: under no known prefix; add it to SCOPE_OF_PREFIX")


def call(client: TestClient, method: str, path: str, key: str | None) -> int:
    headers = {"X-API-Key": key} if key else {}
    return client.request(method, path, headers=headers, json={}).status_code


def test_every_route_but_the_listed_ones_needs_a_key(target: tuple[TestClient, str]) -> None:
    client, _ = target
    found = routes(client)
    assert len(found) > 50  # the walk found the whole service (60 routes)
    wrong = {f"{method} {path}": code for method, path in found
             if (code := call(client, method, path, None)) != 401}  # fmt: skip
    assert wrong == {}


@pytest.mark.parametrize("scope", ["support", "sentiment", "recommend"])
def test_a_key_reaches_only_the_routes_of_its_scope(
    target: tuple[TestClient, str], scope: str
) -> None:
    client, _ = target
    with session_scope(get_session_factory(str(client.app.state.settings.database_url))) as s:
        key = create_api_key(s, f"only-{scope}", [scope])[1]
    refused, checked = {}, routes(client)
    assert len(checked) > 50  # the walk found the whole service, so the check below means it
    for method, path in checked:
        needed = scope_of(method, path)
        allowed = needed is None or needed == scope
        if allowed and path in ENDLESS:
            continue
        code = call(client, method, path, key)
        if code in (401, 403) if allowed else code != 403:
            refused[f"{method} {path}"] = code
    assert refused == {}


def test_a_revoked_key_is_refused_everywhere(target: tuple[TestClient, str]) -> None:
    client, _ = target
    factory = get_session_factory(str(client.app.state.settings.database_url))
    with session_scope(factory) as session:
        key = create_api_key(session, "leaving", ["admin"])[1]
    assert call(client, "GET", "/v1/jobs", key) == 200
    with session_scope(factory) as session:
        revoke_api_key(
            session, session.scalars(select(ApiKey.id).where(ApiKey.name == "leaving")).one()
        )
    client.app.state.api_keys.clear()  # the cache would trust it for TEXTSUITE_API_KEY_CACHE_S
    checked = routes(client)
    assert len(checked) > 50
    wrong = {f"{method} {path}": code for method, path in checked
             if (code := call(client, method, path, key)) != 401}  # fmt: skip
    assert wrong == {}
