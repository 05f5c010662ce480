"""The catalogue over HTTP: scopes, CRUD, example handling, file import errors, export."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

from apps.support.api.catalogue import router
from core.api import create_app
from core.security import create_api_key
from core.settings import Settings
from core.storage.engine import get_session_factory, session_scope
from tests.conftest import make_settings
from workers.dispatch import create_dispatcher

ORDER_STATUS = {
    "name": "order_status",
    "description": "The customer asks where an order is",
    "answer": "Hi {customer_name|there}! Order {order_id} is on its way.",
    "tags": ["orders"],
    "owner": "support-team",
    "examples": ["Where is my order?", "  has my parcel   shipped yet "],
}

RASA = """\
version: "3.1"
nlu:
- intent: greet
  examples: |
    - hey
    - hello from [Berlin](city)
- intent: goodbye
  examples: |
    - bye
---
version: "3.1"
responses:
  utter_greet:
  - text: "Hi {customer_name|there}!"
"""


def make_client(settings: Settings) -> TestClient:
    support = APIRouter(prefix="/v1/support")
    support.include_router(router)
    app = create_app(settings, dispatcher=create_dispatcher(settings), routers=[support])
    return TestClient(app)


@pytest.fixture
def http(service_settings: Settings) -> Iterator[TestClient]:
    with make_client(service_settings) as client:
        yield client


@pytest.fixture
def headers(api_key: Callable[..., str]) -> dict[str, str]:
    return {"X-API-Key": api_key("support")}


ROUTES = [
    ("GET", "/v1/support/intents"),
    ("POST", "/v1/support/intents"),
    ("GET", "/v1/support/intents/order_status"),
    ("PATCH", "/v1/support/intents/order_status"),
    ("DELETE", "/v1/support/intents/order_status"),
    ("POST", "/v1/support/intents/order_status/examples"),
    ("DELETE", "/v1/support/intents/order_status/examples/8b6a3d0e-7f39-4a53-9d6e-0c0f8e1f2a11"),
    ("POST", "/v1/support/catalogue/import"),
    ("GET", "/v1/support/catalogue/export"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_route_needs_a_key_with_the_support_scope(
    http: TestClient, api_key: Callable[..., str], method: str, path: str
) -> None:
    assert http.request(method, path).status_code == 401
    wrong = http.request(method, path, headers={"X-API-Key": api_key("sentiment")})
    assert wrong.status_code == 403 and "lacks the 'support' scope" in wrong.json()["detail"]


def test_create_read_update_delete(http: TestClient, headers: dict[str, str]) -> None:
    created = http.post("/v1/support/intents", json=ORDER_STATUS, headers=headers)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["slots"] == ["customer_name", "order_id"]
    assert [e["text"] for e in body["examples"]] == [
        "Where is my order?",
        "has my parcel shipped yet",
    ]

    listed = http.get("/v1/support/intents", headers=headers).json()
    assert [(i["name"], i["example_count"], i["tags"]) for i in listed] == [
        ("order_status", 2, ["orders"])
    ]

    patched = http.patch(
        "/v1/support/intents/order_status",
        json={"answer": "On its way!", "owner": None, "handoff": True},
        headers=headers,
    )
    assert patched.status_code == 200, patched.text
    got = http.get("/v1/support/intents/order_status", headers=headers).json()
    assert (got["answer"], got["owner"], got["handoff"], got["description"]) == (
        "On its way!",
        None,
        True,
        ORDER_STATUS["description"],
    )

    assert http.delete("/v1/support/intents/order_status", headers=headers).status_code == 204
    missing = http.get("/v1/support/intents/order_status", headers=headers)
    assert missing.status_code == 404 and "no intent named 'order_status'" in missing.text
    assert http.delete("/v1/support/intents/order_status", headers=headers).status_code == 404


def test_duplicate_name_is_409(http: TestClient, headers: dict[str, str]) -> None:
    assert http.post("/v1/support/intents", json=ORDER_STATUS, headers=headers).status_code == 201
    again = http.post("/v1/support/intents", json=ORDER_STATUS, headers=headers)
    assert again.status_code == 409 and "already exists" in again.json()["detail"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "Order Status"}, "try 'order_status'"),
        ({"answer": "Hello {name"}, "answer template: unmatched '{' at character 7"),
        ({"examples": []}, "at least 1 item"),
        ({"examples": ["x" * 1001]}, "at most 1000 characters"),
        ({"examples": ["ok"] * 1001}, "at most 1000 items"),
        ({"examples": ["   "]}, "example is empty"),
        ({"examples": ["nul\u0000"]}, "control character U+0000"),
        ({"answer": "x" * 4001}, "at most 4000 characters"),
        ({"tags": ["a|b"]}, "separates tags in CSV"),
        ({"colour": "red"}, "Extra inputs are not permitted"),
        ({"handoff": "perhaps"}, "valid boolean"),
    ],
)
def test_invalid_intents_are_422_with_a_reason(
    http: TestClient, headers: dict[str, str], change: dict[str, object], message: str
) -> None:
    response = http.post("/v1/support/intents", json={**ORDER_STATUS, **change}, headers=headers)
    assert response.status_code == 422
    assert message in response.text
    assert http.get("/v1/support/intents", headers=headers).json() == []


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"answer": None}, 422),
        ({"tags": None}, 422),
        ({"name": "renamed"}, 422),
        ({"answer": "ok {"}, 422),
        ({"description": ""}, 200),
    ],
)
def test_patch_checks_its_fields(
    http: TestClient, headers: dict[str, str], body: dict[str, object], status: int
) -> None:
    http.post("/v1/support/intents", json=ORDER_STATUS, headers=headers)
    response = http.patch("/v1/support/intents/order_status", json=body, headers=headers)
    assert response.status_code == status, response.text
    if status == 200:
        assert response.json()["description"] is None


def test_examples_added_duplicates_conflicts_and_removal(
    http: TestClient, headers: dict[str, str]
) -> None:
    http.post("/v1/support/intents", json=ORDER_STATUS, headers=headers)
    refund = {"name": "refund", "answer": "Sure.", "examples": ["money back"]}
    http.post("/v1/support/intents", json=refund, headers=headers)
    url = "/v1/support/intents/order_status/examples"

    added = http.post(url, json={"texts": ["WHERE IS MY ORDER?", "is it shipped"]}, headers=headers)
    assert added.status_code == 200, added.text
    assert [e["text"] for e in added.json()["added"]] == ["is it shipped"]
    assert added.json()["duplicates"] == ["WHERE IS MY ORDER?"]

    conflict = http.post(url, json={"texts": ["Money back"]}, headers=headers)
    assert conflict.status_code == 409 and "'Money back' teaches 'refund'" in conflict.text
    assert http.post(url, json={"texts": []}, headers=headers).status_code == 422
    assert http.post(url, json=["a list"], headers=headers).status_code == 422
    missing = http.post("/v1/support/intents/nope/examples", json={"texts": ["x"]}, headers=headers)
    assert missing.status_code == 404

    examples = http.get("/v1/support/intents/refund", headers=headers).json()["examples"]
    last = http.delete(f"/v1/support/intents/refund/examples/{examples[0]['id']}", headers=headers)
    assert last.status_code == 409 and "last example" in last.json()["detail"]
    first = http.get("/v1/support/intents/order_status", headers=headers).json()["examples"][0]
    removed = http.delete(f"{url}/{first['id']}", headers=headers)
    assert removed.status_code == 204
    assert http.delete(f"{url}/{first['id']}", headers=headers).status_code == 404
    assert http.delete(f"{url}/not-a-uuid", headers=headers).status_code == 422


BAD_YAML = """\
version: 1
intents:
  - name: order_status
    answer: "Hello {name"
    examples: [where is my order]
  - name: Refund
    examples: [money back]
  - name: order_status
    examples: [again]
"""


def test_import_errors_are_422_by_line_and_nothing_is_written(
    http: TestClient, headers: dict[str, str]
) -> None:
    response = http.post("/v1/support/catalogue/import", content=BAD_YAML, headers=headers)
    assert response.status_code == 422
    body = response.json()
    assert body["detail"] == "catalogue not imported, nothing was written: 3 problems"
    assert [(e["line"], e["message"][:40]) for e in body["errors"]] == [
        (4, "intent 'order_status': answer template: "),
        (6, "intent 'Refund': name must match ^[a-z0-"),
        (8, "duplicate intent 'order_status' (first d"),
    ]
    assert http.get("/v1/support/intents", headers=headers).json() == []


@pytest.mark.parametrize(
    ("query", "content"),
    [
        ("format=yaml", b"\xff\xfe\x00\x00junk"),
        ("format=csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"),
        ("format=rasa", b"[" * 100_000),
        ("format=yaml", b"{" * 100_000),
        ("format=yaml", b""),
        ("format=yaml", b'{"intents": 42}'),
        ("format=csv", "intent,text\nrefund,\u00e9\u0000\n".encode()),
        ("format=csv", "intent,text\nrefund,ok\n".encode("utf-16")),
        ("format=xml", b"<intents/>"),
        ("format=yaml&mode=overwrite", b"intents: []"),
    ],
)
def test_malformed_imports_are_422_never_500(
    http: TestClient, headers: dict[str, str], query: str, content: bytes
) -> None:
    response = http.post(f"/v1/support/catalogue/import?{query}", content=content, headers=headers)
    assert response.status_code == 422, response.text
    assert http.get("/v1/support/intents", headers=headers).json() == []


def test_malformed_json_bodies_are_422(http: TestClient, headers: dict[str, str]) -> None:
    json_headers = {**headers, "Content-Type": "application/json"}
    for body in (b"{not json", b"\xff\xfe", b"[]", b'{"name": 1}'):
        response = http.post("/v1/support/intents", content=body, headers=json_headers)
        assert response.status_code == 422, (body, response.text)


@pytest.mark.parametrize("format", ["yaml", "csv"])
def test_export_then_import_into_an_empty_database(
    http: TestClient,
    headers: dict[str, str],
    sqlite_template: Path,
    tmp_path: Path,
    format: str,
) -> None:
    http.post("/v1/support/intents", json=ORDER_STATUS, headers=headers)
    agent = {"name": "talk_to_agent", "handoff": True, "examples": ["a human, please"]}
    http.post("/v1/support/intents", json=agent, headers=headers)
    multiline = {
        "name": "hours",
        "answer": "Mon-Fri:\n9-17, {city|our shop}",
        "examples": ["open?"],
    }
    http.post("/v1/support/intents", json=multiline, headers=headers)

    exported = http.get(f"/v1/support/catalogue/export?format={format}", headers=headers)
    assert exported.status_code == 200
    expected_type = "application/yaml" if format == "yaml" else "text/csv; charset=utf-8"
    assert exported.headers["content-type"] == expected_type
    disposition = f'attachment; filename="support-catalogue.{format}"'
    assert exported.headers["content-disposition"] == disposition

    empty = tmp_path / "empty.db"
    shutil.copy(sqlite_template, empty)
    other = make_settings(
        database_url=f"sqlite:///{empty}", var_dir=tmp_path / "var2", artifacts_dir=tmp_path / "a2"
    )
    with session_scope(get_session_factory(other.database_url)) as session:
        other_key = {"X-API-Key": create_api_key(session, "test", ["support"])[1]}
    with make_client(other) as second:
        imported = second.post(
            f"/v1/support/catalogue/import?format={format}",
            content=exported.content,
            headers=other_key,
        )
        assert imported.status_code == 200, imported.text
        assert sorted(imported.json()["created"]) == ["hours", "order_status", "talk_to_agent"]
        for name in ("order_status", "talk_to_agent", "hours"):
            original = http.get(f"/v1/support/intents/{name}", headers=headers).json()
            copied = second.get(f"/v1/support/intents/{name}", headers=other_key).json()
            fields = ("name", "description", "answer", "slots", "handoff", "tags", "owner")
            assert {k: copied[k] for k in fields} == {k: original[k] for k in fields}
            assert [e["text"] for e in copied["examples"]] == [
                e["text"] for e in original["examples"]
            ]
        again = second.get(f"/v1/support/catalogue/export?format={format}", headers=other_key)
        assert again.content == exported.content


def test_rasa_import_with_responses_and_replace(http: TestClient, headers: dict[str, str]) -> None:
    http.post("/v1/support/intents", json=ORDER_STATUS, headers=headers)
    merged = http.post("/v1/support/catalogue/import?format=rasa", content=RASA, headers=headers)
    assert merged.status_code == 200, merged.text
    assert merged.json()["created"] == ["greet", "goodbye"]
    greet = http.get("/v1/support/intents/greet", headers=headers).json()
    assert greet["answer"] == "Hi {customer_name|there}!"
    assert [e["text"] for e in greet["examples"]] == ["hey", "hello from Berlin"]
    assert http.get("/v1/support/intents/goodbye", headers=headers).json()["answer"] == ""

    replaced = http.post(
        "/v1/support/catalogue/import?format=rasa&mode=replace", content=RASA, headers=headers
    )
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["deleted"] == ["order_status"]
    assert replaced.json()["unchanged"] == ["greet", "goodbye"]
    names = [i["name"] for i in http.get("/v1/support/intents", headers=headers).json()]
    assert names == ["goodbye", "greet"]


def test_csv_import_reports_counts(http: TestClient, headers: dict[str, str]) -> None:
    csv_text = "intent,text,answer\nrefund,money back,Sure.\nrefund,MONEY  BACK,\nrefund,refund,\n"
    response = http.post(
        "/v1/support/catalogue/import?format=csv",
        content=csv_text,
        headers={**headers, "Content-Type": "text/csv"},
    )
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["created"], report["examples_added"], report["examples_skipped"]) == (
        ["refund"],
        2,
        1,
    )


def test_the_content_type_says_csv_when_the_query_does_not(
    http: TestClient, headers: dict[str, str]
) -> None:
    csv_text = "intent,text,answer\nrefund,money back,Sure.\n"
    response = http.post(
        "/v1/support/catalogue/import",
        content=csv_text,
        headers={**headers, "Content-Type": "text/csv; charset=utf-8"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["created"] == ["refund"]
    # Without either, a body is YAML: this CSV is not.
    plain = http.post(
        "/v1/support/catalogue/import",
        content=csv_text.replace("refund", "refunds"),
        headers={**headers, "Content-Type": "text/plain"},
    )
    assert plain.status_code == 422 and "nothing was written" in plain.json()["detail"]


def test_the_catalogue_health_says_what_needs_attention(world_settings: Settings) -> None:
    from apps.support.health import _confusions
    from textsuite.service import create_service

    with session_scope(get_session_factory(world_settings.database_url)) as session:
        key = create_api_key(session, "lead", ["support"])[1]
    headers = {"X-API-Key": key}
    with TestClient(create_service(world_settings)) as client:
        fresh = client.get("/v1/support/catalogue/health", headers=headers).json()
        assert fresh["model_version"] == 1 and fresh["unknown_to_catalogue"] == []
        assert all(i["validation_f1"] is not None for i in fresh["intents"])
        added = client.post("/v1/support/intents", headers=headers, json={
            "name": "gift_wrap", "answer": "", "examples": ["can you gift wrap it", "gift wrap"],
        })  # fmt: skip
        assert added.status_code == 201, added.text
        lost = fresh["intents"][-1]["name"]  # one without problems: listed last
        assert client.delete(f"/v1/support/intents/{lost}", headers=headers).status_code == 204
        after = client.get("/v1/support/catalogue/health", headers=headers).json()
    flagged = [bool(intent["problems"]) for intent in after["intents"]]
    assert flagged == sorted(flagged, reverse=True)  # those with problems first
    [first] = [intent for intent in after["intents"] if intent["name"] == "gift_wrap"]
    assert first["validation_f1"] is None
    assert first["problems"] == [
        "2 examples: give it at least 8",
        "no answer template: every message it matches is handed off",
        "not in the production model (v1): retrain to answer it",
    ]
    assert after["unknown_to_catalogue"] == [lost]
    assert after["problems"] >= fresh["problems"] + 4
    # A version without held-out scores (no validation split): learnt intents are not
    # reported as unlearnt, and no F1 is made up.
    from apps.support.health import catalogue_health
    from apps.support.settings import load_support_settings
    from core.ml.versions import production_version

    factory = get_session_factory(world_settings.database_url)
    with session_scope(factory) as session:
        production_version(session, "support-intents").metrics = {"accuracy": 0.9}
    with factory() as session:
        bare = catalogue_health(session, load_support_settings(_env_file=None))
    unlearnt = [
        i.name for i in bare.intents if any("not in the production" in p for p in i.problems)
    ]
    assert unlearnt == ["gift_wrap"]
    assert all(i.validation_f1 is None and not i.confused_with for i in bare.intents)
    matrix = {"labels": ["a", "b", "c"], "matrix": [[6, 4, 0], [1, 9, 0], [0, 0, 0]]}
    assert _confusions(matrix) == {"a": {"b": 4}}  # b's one slip is under a fifth
