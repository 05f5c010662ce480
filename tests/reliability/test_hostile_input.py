"""Malformed and hostile requests, aimed where they hurt: each gets a 4xx whose detail says
what and why, and nothing of a refused request is stored."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

MESSAGE = "/v1/support/messages"
ARTICLES = "/v1/sentiment/articles"
ITEMS = "/v1/recommend/items"
EVENTS = "/v1/recommend/events"
QUERY = "/v1/recommend/query"

TOO_LONG = "x" * 20_001
CASES: list[tuple[str, str, Any, int, str]] = [
    # (what, path, JSON body, status, a word the detail must hold)
    ("empty message", MESSAGE, {"conversation_id": "c1", "text": "   "}, 422, "empty"),
    ("message too long", MESSAGE, {"conversation_id": "c1", "text": "x" * 2001}, 422, "2000"),
    ("unknown field", MESSAGE, {"conversation_id": "c1", "text": "hi", "evil": 1}, 422, "evil"),
    ("empty title", ARTICLES, {"title": ""}, 422, "title"),
    ("title too long", ARTICLES, {"title": TOO_LONG}, 422, "title"),
    ("batch too large", ARTICLES, {"articles": [{"title": "t"}] * 1001}, 422, "articles"),
    ("not a URL", ARTICLES, {"title": "t", "url": "javascript:alert(1)"}, 422, "url"),
    ("no timezone", ARTICLES, {"title": "t", "published_at": "2026-11-01T10:00"}, 422, "time"),
    ("year 9999", ARTICLES, {"title": "t", "published_at": "9999-12-31T00:00:00Z"}, 422, "ahead"),
    (
        "event from the future",
        EVENTS,
        {"user_id": "u1", "item_id": "i1", "type": "view", "timestamp": "2999-01-01T00:00:00Z"},
        422,
        "ahead",
    ),
    ("empty query", QUERY, {"text": " "}, 422, "text"),
    ("item without id", ITEMS, {"items": [{"title": "a tent"}]}, 422, "id"),
    ("no events", EVENTS, {"events": []}, 422, "events"),
    (
        "event on an unknown item",
        EVENTS,
        {"events": [{"user_id": "u1", "item_id": "nope", "type": "view"}]},
        422,
        "nope",
    ),
    ("wrong type", EVENTS, {"events": "all of them"}, 422, "events"),
]


def detail_text(response: Any) -> str:
    return json.dumps(response.json()["detail"])


@pytest.mark.parametrize(
    ("what", "path", "body", "status", "word"), CASES, ids=[case[0] for case in CASES]
)
def test_bad_json_gets_a_4xx_that_says_why(
    target: tuple[TestClient, str], what: str, path: str, body: Any, status: int, word: str
) -> None:
    client, key = target
    response = client.post(path, json=body, headers={"X-API-Key": key})
    assert response.status_code == status, f"{what}: {response.status_code} {response.text[:300]}"
    assert word in detail_text(response), f"{what}: {detail_text(response)[:300]}"


@pytest.mark.parametrize("path", [MESSAGE, ARTICLES, ITEMS, EVENTS, QUERY])
def test_bodies_that_are_not_json_are_refused(target: tuple[TestClient, str], path: str) -> None:
    client, key = target
    headers = {"X-API-Key": key, "Content-Type": "application/json"}
    for raw in (b'{"text": "caf\xe9"}', b"\xff\xfe\x00", b'{"text": ', b"", b"[]" * 10):
        response = client.post(path, content=raw, headers=headers)
        assert 400 <= response.status_code < 500, (raw, response.status_code, response.text)
        assert response.json()["detail"]


@pytest.mark.parametrize("path", [MESSAGE, ARTICLES, ITEMS, EVENTS])
def test_oversized_bodies_get_413_before_they_are_read(
    target: tuple[TestClient, str], path: str
) -> None:
    client, key = target
    huge = b'{"text": "' + b"a" * (2 * 1024 * 1024) + b'"}'
    response = client.post(
        path, content=huge, headers={"X-API-Key": key, "Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert "bytes" in response.json()["detail"]


def test_an_oversized_body_sent_in_chunks_gets_413(target: tuple[TestClient, str]) -> None:
    """No Content-Length to refuse it by: the limit is counted as the chunks arrive."""
    client, key = target
    chunks = (b'{"title": "' if n == 0 else b"a" * 65536 for n in range(40))
    response = client.post(
        ARTICLES, content=chunks, headers={"X-API-Key": key, "Content-Type": "application/json"}
    )
    assert response.status_code == 413, response.text
    assert "TEXTSUITE_MAX_REQUEST_BYTES" in response.json()["detail"]


# Valid JSON in free-form fields (metadata, attributes, job parameters), stored as given and
# sent back by every later answer that lists it: values no JSON answer can carry are refused.
@pytest.mark.parametrize(
    "backend", ["target", pytest.param("postgres_target", marks=pytest.mark.postgres)]
)
@pytest.mark.parametrize("path", ["/v1/sentiment/feeds", "/v1/sentiment/webhooks"])
def test_a_link_longer_than_the_tables_hold_is_refused(
    request: pytest.FixtureRequest, backend: str, path: str
) -> None:
    """HttpUrl takes 2,083 characters; the tables hold 2,000 (PostgreSQL refused the rest)."""
    client, key = request.getfixturevalue(backend)
    url = "http://127.0.0.1:8619/" + "a" * 2040
    response = client.post(path, json={"url": url}, headers={"X-API-Key": key})
    assert response.status_code == 422, response.text
    assert "more than 2000 characters" in detail_text(response)


UNFIT: list[tuple[str, str, str, str, str]] = [
    # (what, path, body, why, the listing that must still answer)
    ("NaN job parameter", "/v1/jobs", '{"kind": "core.worker_info", "params": {"echo": NaN}}',
     "NaN is not a JSON number", "/v1/jobs"),
    ("1e309 item metadata", ITEMS, '{"id": "m1", "title": "t", "metadata": {"a": 1e309}}',
     "out of range", f"{ITEMS}?limit=1000"),
    ("surrogate job parameter", "/v1/jobs",
     '{"kind": "core.worker_info", "params": {"echo": "\\ud800"}}', "surrogate", "/v1/jobs"),
    ("surrogate customer attribute", "/v1/support/customers/c9",
     '{"attributes": {"tier": "\\ud800"}}', "surrogate", "/v1/support/review"),
    ("surrogate message metadata", MESSAGE,
     '{"conversation_id": "s1", "text": "hi", "metadata": {"order_id": "\\udfff"}}',
     "surrogate", "/v1/support/conversations/s1"),
    ("metadata 40 deep", ITEMS,
     '{"id": "d1", "title": "t", "metadata": ' + '{"a": ' * 40 + "1" + "}" * 40 + "}",
     "nested deeper than 32 levels", f"{ITEMS}?limit=1000"),
]  # fmt: skip


@pytest.mark.parametrize(
    "backend", ["target", pytest.param("postgres_target", marks=pytest.mark.postgres)]
)
@pytest.mark.parametrize(
    ("what", "path", "raw", "why", "listing"), UNFIT, ids=[case[0] for case in UNFIT]
)
def test_free_form_values_no_answer_could_carry_are_refused_and_nothing_is_stored(
    request: pytest.FixtureRequest, backend: str, what: str, path: str, raw: str, why: str,
    listing: str,
) -> None:  # fmt: skip
    client, key = request.getfixturevalue(backend)
    headers = {"X-API-Key": key, "Content-Type": "application/json"}
    method = "PUT" if "/customers/" in path else "POST"
    response = client.request(method, path, content=raw.encode(), headers=headers)
    assert response.status_code == 422, f"{what}: {response.status_code} {response.text[:300]}"
    assert why in detail_text(response), detail_text(response)
    after = client.get(listing, headers={"X-API-Key": key})
    assert after.status_code in (200, 404), f"{what}: {after.status_code} {after.text[:300]}"
    assert why not in after.text and "\\ud800" not in after.text


def test_a_refused_batch_stores_nothing(target: tuple[TestClient, str]) -> None:
    client, key = target
    headers = {"X-API-Key": key}
    good = {"id": "ok-1", "title": "A good tent"}
    bad = {"id": "", "title": "no id"}
    refused = client.post(ITEMS, json={"items": [good, bad]}, headers=headers)
    assert refused.status_code == 422
    assert client.get(f"{ITEMS}/ok-1", headers=headers).status_code == 404


UNREADABLE: list[tuple[str, bytes, str]] = [
    ("Latin-1 byte", b'{"conversation_id": "c1", "text": "caf\xe9"}', "not valid UTF-8"),
    ("a 5,000-digit number", b'{"conversation_id": "c1", "text": "hi", "k": ' + b"9" * 5000 + b"}",
     "number in the body is too long"),
    ("nesting 100,000 deep", b'{"metadata": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
     "nested deeper than 32 levels"),
]  # fmt: skip


@pytest.mark.parametrize("path", [MESSAGE, ARTICLES, QUERY])
@pytest.mark.parametrize(("what", "raw", "why"), UNREADABLE, ids=[c[0] for c in UNREADABLE])
def test_a_body_json_cannot_read_is_told_why(
    target: tuple[TestClient, str], path: str, what: str, raw: bytes, why: str
) -> None:
    """Not "There was an error parsing the body": what is wrong with it."""
    client, key = target
    headers = {"X-API-Key": key, "Content-Type": "application/json"}
    response = client.post(path, content=raw, headers=headers)
    assert response.status_code == 422 and why in detail_text(response), response.text


@pytest.mark.parametrize(
    ("path", "sent"),
    [
        (MESSAGE, {"conversation_id": "c1", "text": "where is my order?"}),
        (ARTICLES, {"title": "Halvorsen shares fall"}),  # one article or a batch
        (ITEMS, {"id": "T1", "title": "Tent"}),  # one item or a batch
    ],
)
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_json_sent_as_another_content_type_is_told_which_to_send(
    target: tuple[TestClient, str], content_type: str | None, path: str, sent: dict
) -> None:
    client, key = target
    headers = {"X-API-Key": key, **({"Content-Type": content_type} if content_type else {})}
    response = client.post(path, content=json.dumps(sent), headers=headers)
    assert response.status_code == 415, response.text
    assert "Content-Type: application/json" in response.json()["detail"]
    assert str(content_type or "none") in response.json()["detail"]


RULES = "/v1/sentiment/rules"
# JSON that parses, with values a JSON reply cannot echo (a lone surrogate, NaN) or a database
# cannot store (NUL): each must get a 4xx, or be stored as sent, never a 500.
UNUSUAL: list[tuple[str, str, str]] = [
    ("lone surrogate in a message", MESSAGE, '{"conversation_id": "c1", "text": "hi \\ud800"}'),
    ("lone surrogate as a field name", MESSAGE, '{"conversation_id": "c1", "\\udfff": 1}'),
    ("lone surrogate in a title", ARTICLES, '{"title": "up \\ud800 5%"}'),
    ("lone surrogate in a query", QUERY, '{"text": "\\ud800"}'),
    ("NaN rating", EVENTS, '{"user_id": "u1", "item_id": "i1", "type": "rating", "value": NaN}'),
    ("NaN k", QUERY, '{"text": "a tent", "k": NaN}'),
    (
        "infinite threshold",
        RULES,
        '{"name": "x", "kind": "z_score", "window_s": 3600, "threshold": -Infinity}',
    ),
    (
        "NUL in a message",
        MESSAGE,
        '{"conversation_id": "c\\u0000", "text": "hi\\u0000", "metadata": {"o\\u0000": "\\u0000"}}',
    ),
    ("NUL in an item", ITEMS, '{"id": "n\\u0000", "title": "a tent\\u0000"}'),
]


@pytest.mark.parametrize(
    "backend", ["target", pytest.param("postgres_target", marks=pytest.mark.postgres)]
)
@pytest.mark.parametrize(("what", "path", "raw"), UNUSUAL, ids=[case[0] for case in UNUSUAL])
def test_values_json_allows_but_nothing_else_does_never_give_a_500(
    request: pytest.FixtureRequest, backend: str, what: str, path: str, raw: str
) -> None:
    client, key = request.getfixturevalue(backend)
    headers = {"X-API-Key": key, "Content-Type": "application/json"}
    response = client.post(path, content=raw.encode(), headers=headers)
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:300]}"
    if response.status_code >= 400:
        assert response.json()["detail"], what


@pytest.mark.parametrize(
    ("path", "body", "field", "batch_key"),
    [
        (ARTICLES, {"title": 5}, "title", "articles"),
        (ITEMS, {"title": "a tent"}, "id", "items"),
        (EVENTS, {"user_id": "u1", "item_id": "i1"}, "type", "events"),
    ],
)
def test_one_bad_object_is_told_about_itself_not_about_the_batch_form(
    target: tuple[TestClient, str], path: str, body: dict, field: str, batch_key: str
) -> None:
    client, key = target
    batch = client.post(path, json={batch_key: [body]}, headers={"X-API-Key": key})
    assert [error["loc"] for error in batch.json()["detail"]] == [["body", batch_key, 0, field]]
    response = client.post(path, json=body, headers={"X-API-Key": key})
    assert response.status_code == 422
    places = [error["loc"] for error in response.json()["detail"]]
    assert places == [["body", field]], places  # where the client put it: no union tag
    assert batch_key not in detail_text(response) and "function-after" not in detail_text(response)


@pytest.mark.postgres
def test_nul_characters_are_dropped_from_messages_whatever_the_database(
    postgres_target: tuple[TestClient, str],
) -> None:
    client, key = postgres_target
    headers = {"X-API-Key": key}
    body = {
        "conversation_id": "nul\x00-1",
        "text": "wh\x00ere is my order?",
        "metadata": {"a": "\x00"},
    }
    reply = client.post(MESSAGE, json=body, headers=headers)
    assert reply.status_code == 200, reply.text
    stored = client.get("/v1/support/conversations/nul-1", headers=headers).json()
    assert [m["text"] for m in stored["messages"] if m["role"] == "customer"] == [
        "where is my order?"
    ]


@pytest.mark.postgres
def test_a_value_postgresql_cannot_store_gets_a_422_and_stores_nothing(
    postgres_target: tuple[TestClient, str],
) -> None:
    client, key = postgres_target
    headers = {"X-API-Key": key}
    item = {"id": "nul-item", "title": "a tent\x00"}
    refused = client.post(ITEMS, json=item, headers=headers)
    assert refused.status_code == 422 and "NUL" in refused.json()["detail"], refused.text
    assert client.get(f"{ITEMS}/nul-item", headers=headers).status_code == 404


@pytest.mark.postgres
def test_concurrent_first_writes_of_the_same_record_all_succeed(
    postgres_target: tuple[TestClient, str],
) -> None:
    """Eight requests creating one customer (or the default rules) at once: the ones that
    lose the race to insert it update it, never a 500."""
    from concurrent.futures import ThreadPoolExecutor

    client, key = postgres_target
    headers = {"X-API-Key": key}

    def put_customer(n: int) -> int:
        body = {"name": f"Maya {n}", "attributes": {"tier": "gold"}}
        return client.put("/v1/support/customers/race-1", json=body, headers=headers).status_code

    def install_defaults(_n: int) -> int:
        return client.post("/v1/sentiment/rules/defaults", headers=headers).status_code

    with ThreadPoolExecutor(8) as pool:
        customers = list(pool.map(put_customer, range(8)))
        defaults = list(pool.map(install_defaults, range(8)))
    assert customers == [200] * 8
    assert all(200 <= code < 300 for code in defaults), defaults
