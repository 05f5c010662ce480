"""The recommender over HTTP on embedded defaults: items embedded by an in-process job with the
real MiniLM encoder, events, the three lists, feedback, filters and a restart."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from apps.recommend.models import Interaction, ItemEmbedding, Recommendation
from core.settings import Settings
from core.storage.engine import get_session_factory
from tests.apps.sentiment.test_api import key_for
from tests.workers.conftest import wait_for_job
from textsuite.service import create_service

ITEMS = [
    ("T1", "Summit 2 mountaineering tent", "tents", "Summit", "Four-season dome for high camps."),
    ("T2", "Summit 3 mountaineering tent", "tents", "Summit", "Roomier four-season dome."),
    ("T3", "Meadow family tent", "tents", None, "Six-person tunnel tent for campsites."),
    ("T4", "Ridge ultralight shelter", "tents", None, "A 600 g trekking-pole tarp tent."),
    ("B1", "Glacier down sleeping bag", "sleeping-bags", None, "Rated to -20 C, 800 fill."),
    ("B2", "Summer synthetic sleeping bag", "sleeping-bags", None, "Light bag for warm nights."),
    ("M1", "Insulated winter sleeping mat", "mats", None, "R-value 6.5 for snow camping."),
    ("M2", "Foam camping mat", "mats", None, "Closed-cell foam pad, indestructible."),
    ("S1", "Titanium gas stove", "stoves", None, "A 45 g canister stove that boils fast."),
    ("S2", "Family two-burner stove", "stoves", None, "Car camping stove with wind shields."),
    ("K1", "Packraft paddle", "paddling", None, "Four-piece carbon paddle for packrafts."),
    ("K2", "Inflatable packraft", "paddling", None, "A 2.2 kg raft for river trips."),
]

ITEMS_BY_ID = {row[0]: row for row in ITEMS}


def item(external_id: str, title: str, category: str, series: str | None, text: str) -> dict:
    return {
        "id": external_id,
        "title": title,
        "description": text,
        "category": category,
        "series": series,
        "tags": [category],
        "metadata": {"price_eur": 100},
    }


def event(n: int, user: str, item_id: str, kind: str = "view", **extra: Any) -> dict:
    at = dt.datetime(2026, 11, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=n)
    return {
        "event_id": f"e{n}-{user}-{item_id}",
        "user_id": user,
        "item_id": item_id,
        "type": kind,
        "timestamp": at.isoformat(),
        **extra,
    }


def embed_and_refresh(client: TestClient, settings: Settings, job_id: str | None) -> None:
    assert job_id is not None
    job = wait_for_job(get_session_factory(settings.database_url), job_id, timeout_s=120)
    assert job.status.value == "succeeded", job.error
    service = client.app.state.recommend
    service.state.refresh()
    service.state.refresh_behaviour()


@pytest.fixture
def api(service_settings: Settings) -> Iterator[tuple[TestClient, dict[str, str]]]:
    with TestClient(create_service(service_settings)) as client:
        headers = key_for(service_settings, "recommend")
        created = client.post(
            "/v1/recommend/items", json={"items": [item(*row) for row in ITEMS]}, headers=headers
        )
        assert created.status_code == 200, created.text
        assert created.json()["created"] == len(ITEMS) and created.json()["to_embed"] == len(ITEMS)
        embed_and_refresh(client, service_settings, created.json()["embedding_job_id"])
        yield client, headers


def titles(reply: Any) -> list[str]:
    assert reply.status_code == 200, reply.text
    return [entry["item_id"] for entry in reply.json()["items"]]


def test_similar_items_by_text_and_query(api: tuple[TestClient, dict[str, str]]) -> None:
    from prometheus_client import REGISTRY

    def query_batches() -> float:
        return (
            REGISTRY.get_sample_value("textsuite_batch_size_count", {"batcher": "recommend-query"})
            or 0.0
        )

    client, headers = api
    batches_before = query_batches()
    similar = client.get("/v1/recommend/items/T1/similar?k=3", headers=headers)
    ids = titles(similar)
    assert "T1" not in ids and len(ids) == 3
    assert ids[0] == "T2", similar.json()  # same series is allowed for "similar"
    assert similar.json()["items"][0]["reason"] == "similar to Summit 2 mountaineering tent"

    found = client.post(
        "/v1/recommend/query",
        json={"text": "a boat to float down a river", "k": 2},
        headers=headers,
    )
    assert set(titles(found)) == {"K1", "K2"}, found.json()
    assert found.json()["strategy"] == "query"
    only_stoves = client.post(
        "/v1/recommend/query", json={"text": "cooking", "category": "stoves"}, headers=headers
    )
    assert set(titles(only_stoves)) == {"S1", "S2"}
    assert query_batches() == batches_before + 2  # queries run through the serving batcher


def test_a_query_is_stored_with_personal_data_masked(
    api: tuple[TestClient, dict[str, str]], service_settings: Settings
) -> None:
    client, headers = api
    text = "boat for river trips, mail me at dana@example.com"
    found = client.post("/v1/recommend/query", json={"text": text, "k": 2}, headers=headers)
    assert found.status_code == 200, found.text
    assert "dana@example.com" not in found.text
    with get_session_factory(service_settings.database_url)() as session:
        stored = session.scalars(select(Recommendation.request)).all()
    assert [r["query"] for r in stored] == ["boat for river trips, mail me at [EMAIL]"]


def test_user_recommendations_blend_behaviour_and_exclude_seen(
    api: tuple[TestClient, dict[str, str]], service_settings: Settings
) -> None:
    client, headers = api
    # Before any event, a user's list is the newest of the catalogue, not empty.
    opening = client.get("/v1/recommend/users/first-visitor?k=4", headers=headers)
    assert opening.json()["strategy"] == "popular" and len(titles(opening)) == 4
    assert {r["reason"] for r in opening.json()["items"]} == {"new in the catalogue"}
    # Winter campers buy the Summit tent with the Glacier bag and the winter mat.
    events = []
    for n, user in enumerate(["w1", "w2", "w3", "w4"]):
        for m, item_id in enumerate(["T1", "B1", "M1"]):
            events.append(event(10 * n + m, user, item_id, "purchase"))
    events.append(event(100, "newbie", "T1", "view"))
    stored = client.post("/v1/recommend/events", json={"events": events}, headers=headers)
    assert stored.json() == {"stored": len(events), "duplicates": 0}
    client.app.state.recommend.state.refresh_behaviour()

    reply = client.get("/v1/recommend/users/newbie?k=4", headers=headers)
    ids = titles(reply)
    assert reply.json()["strategy"] == "personal"
    assert "T1" not in ids  # seen
    # Bought together with T1 by others, and its sibling in the series, lead the list.
    assert set(ids[:3]) == {"B1", "M1", "T2"}, reply.json()
    assert {r["reason"] for r in reply.json()["items"]} == {
        "because you viewed Summit 2 mountaineering tent"
    }
    with_seen = client.get("/v1/recommend/users/newbie?exclude_seen=false&k=12", headers=headers)
    reasons = {r["item_id"]: r["reason"] for r in with_seen.json()["items"]}
    assert reasons["T1"] == "because you viewed it before"  # not "...viewed <T1's title>"

    # A user with no events gets what is popular now; a category filter holds.
    cold = client.get("/v1/recommend/users/stranger?k=3", headers=headers)
    assert cold.json()["strategy"] == "popular"
    assert set(titles(cold)) <= {"T1", "B1", "M1"} and titles(cold)
    assert all(r["reason"] == "popular right now" for r in cold.json()["items"])
    # Three items have events: a list of five takes the newest two others after them.
    five = client.get("/v1/recommend/users/stranger?k=5", headers=headers).json()["items"]
    assert [r["reason"] for r in five] == ["popular right now"] * 3 + ["new in the catalogue"] * 2
    stoves = client.get("/v1/recommend/users/stranger?category=stoves", headers=headers)
    assert set(titles(stoves)) == {"S1", "S2"}  # no events in the category, not an empty list
    mats = client.get("/v1/recommend/users/newbie?category=mats", headers=headers)
    assert set(titles(mats)) == {"M1", "M2"}

    # A low rating is no reason to show anything ("because you rated" a film they hated):
    # the view explains the list, the rating only what nothing else does.
    mixed = [
        event(200, "critic", "T1", "view"),
        event(201, "critic", "K2", "rating", value=2),
        event(202, "carter", "T1", "cart"),
    ]
    assert client.post("/v1/recommend/events", json={"events": mixed}, headers=headers).is_success
    client.app.state.recommend.state.refresh_behaviour()
    critic = client.get("/v1/recommend/users/critic?k=6", headers=headers).json()["items"]
    assert {r["reason"] for r in critic} == {"because you viewed Summit 2 mountaineering tent"}
    carter = client.get("/v1/recommend/users/carter?k=2", headers=headers).json()["items"]
    assert {r["reason"] for r in carter} == {
        "because you added Summit 2 mountaineering tent to your cart"
    }, carter

    # Only dislikes: nothing to build on but what others like, and a 1-star item is neither
    # popular for others nor a neighbour of anything.
    hater = [event(300, "hater", "B1", "rating", value=1), event(301, "hater", "S1", "rating",
             value=1)]  # fmt: skip
    assert client.post("/v1/recommend/events", json={"events": hater}, headers=headers).is_success
    client.app.state.recommend.state.refresh_behaviour()
    hated = client.get("/v1/recommend/users/hater?k=3", headers=headers).json()
    assert hated["strategy"] == "popular", hated
    stoves = client.get("/v1/recommend/users/stranger?category=stoves", headers=headers).json()
    assert {r["reason"] for r in stoves["items"]} == {"new in the catalogue"}, stoves


def test_behaviour_computed_in_its_own_process_matches_in_process(
    api: tuple[TestClient, dict[str, str]], service_settings: Settings
) -> None:
    import asyncio

    import numpy as np

    from apps.recommend.service import RecommendService
    from apps.recommend.settings import load_recommend_settings

    client, headers = api
    events = [event(n, f"p{n % 3}", item_id) for n, item_id in enumerate(["T1", "B1", "M1"] * 3)]
    assert client.post("/v1/recommend/events", json={"events": events}, headers=headers).json()[
        "stored"
    ] == len(events)
    in_process = client.app.state.recommend.state
    in_process.refresh_behaviour()

    recommend = load_recommend_settings(_env_file=None, behaviour_process=True)
    factory = get_session_factory(service_settings.database_url)
    service = RecommendService.create(service_settings, recommend, factory)
    try:
        asyncio.run(service.refresh_behaviour())
        assert service._behaviour_pool is not None  # it did run in another process
    finally:
        service.close()
    theirs, ours = service.state.behaviour, in_process.behaviour
    assert theirs.events == ours.events == len(events)
    assert theirs.keys == ours.keys
    assert np.allclose(theirs.similarity.toarray(), ours.similarity.toarray())
    assert np.array_equal(theirs.popular_order, ours.popular_order)


def test_series_do_not_fill_a_list_and_retired_items_disappear(
    api: tuple[TestClient, dict[str, str]],
) -> None:
    client, headers = api
    ids = titles(
        client.post("/v1/recommend/query", json={"text": "mountaineering tent"}, headers=headers)
    )
    assert len({"T1", "T2"} & set(ids[:3])) == 1, ids  # one Summit tent near the top, not two
    assert client.delete("/v1/recommend/items/T2", headers=headers).status_code == 204
    client.app.state.recommend.state.refresh()
    assert "T2" not in titles(
        client.post(
            "/v1/recommend/query", json={"text": "mountaineering tent", "k": 12}, headers=headers
        )
    )


def test_an_update_may_leave_the_title_out_and_a_new_item_may_not(
    api: tuple[TestClient, dict[str, str]],
) -> None:
    client, headers = api
    retired = client.post("/v1/recommend/items", json={"id": "T1", "active": False},
                          headers=headers)  # fmt: skip
    assert retired.status_code == 200, retired.text
    shown = client.get("/v1/recommend/items/T1", headers=headers).json()
    assert shown["active"] is False and shown["title"].startswith("Summit")
    new = client.post("/v1/recommend/items", json={"items": [{"id": "T1", "active": True},
                      {"id": "NEW-1", "active": True}]}, headers=headers)  # fmt: skip
    assert new.status_code == 422 and "new items need a title: 'NEW-1'" in new.text
    assert client.get("/v1/recommend/items/T1", headers=headers).json()["active"] is False
    nulled = client.post("/v1/recommend/items", json={"id": "T1", "title": None}, headers=headers)
    assert nulled.status_code == 422 and "leave it out" in nulled.text
    csv = b"id,active\nT1,true\nNEW-2,true\n"
    imported = client.post("/v1/recommend/items/import", content=csv,
                           headers={**headers, "Content-Type": "text/csv"})  # fmt: skip
    assert imported.status_code == 422 and "line 3: a new item needs a title" in imported.text


def test_events_are_idempotent_and_unknown_items_store_nothing(
    api: tuple[TestClient, dict[str, str]], service_settings: Settings
) -> None:
    client, headers = api
    batch = {"events": [event(1, "u1", "T1"), event(2, "u1", "S1", "cart")]}
    assert client.post("/v1/recommend/events", json=batch, headers=headers).json() == {
        "stored": 2,
        "duplicates": 0,
    }
    assert client.post("/v1/recommend/events", json=batch, headers=headers).json() == {
        "stored": 0,
        "duplicates": 2,
    }
    bad = client.post(
        "/v1/recommend/events",
        json={"events": [event(3, "u1", "T3"), event(4, "u1", "NOPE")]},
        headers=headers,
    )
    assert bad.status_code == 422
    assert bad.json()["detail"]["errors"] == [
        {"event": 1, "error": "unknown item 'NOPE': add it to the catalogue first"}
    ]
    rating = client.post(
        "/v1/recommend/events",
        json={"user_id": "u1", "item_id": "T3", "type": "rating"},
        headers=headers,
    )
    assert rating.status_code == 422 and "needs a value" in rating.text
    off_scale = client.post(
        "/v1/recommend/events",
        json={"events": [event(7, "u1", "T3", "rating", value=4), event(8, "u1", "T4", "rating",
                                                                       value=99)]},
        headers=headers,
    )  # fmt: skip
    assert off_scale.status_code == 422
    assert off_scale.json()["detail"]["errors"] == [
        {"event": 1, "error": "rating 99 is outside the rating scale 1 to 5 (settings "
                              "TEXTSUITE_RECOMMEND_RATING_MIN and _MAX)"}
    ]  # fmt: skip
    # An event_id names one event: the same id for another one is refused, not dropped.
    reused = {"events": [event(5, "u2", "T3"), {**event(1, "u1", "T1"), "type": "purchase"}]}
    refused = client.post("/v1/recommend/events", json=reused, headers=headers)
    assert refused.status_code == 422
    [problem] = refused.json()["detail"]["errors"]
    assert problem["event"] == 1 and "is stored for another event" in problem["error"]
    both = {"events": [event(9, "u2", "NOPE"), {**event(1, "u1", "T1"), "type": "purchase"}]}
    refused = client.post("/v1/recommend/events", json=both, headers=headers)
    assert [e["event"] for e in refused.json()["detail"]["errors"]] == [0, 1]  # one answer
    twice = {"events": [event(6, "u2", "T3"), {**event(6, "u2", "T3"), "item_id": "S1"}]}
    refused = client.post("/v1/recommend/events", json=twice, headers=headers)
    assert "another event earlier in the batch" in refused.text
    with get_session_factory(service_settings.database_url)() as session:
        assert session.scalar(select(func.count(Interaction.id))) == 2  # nothing half-stored


def test_a_user_id_is_trimmed_like_an_item_id_everywhere(
    api: tuple[TestClient, dict[str, str]],
) -> None:
    """ " u9 " is u9 in an event and in a list's path (events refused it with a bare regular
    expression, lists served it as a stranger)."""
    client, headers = api
    stored = client.post("/v1/recommend/events", json=event(1, " u9 ", "T1"), headers=headers)
    assert stored.status_code == 200 and stored.json()["stored"] == 1, stored.text
    padded = client.get("/v1/recommend/users/%20u9%20?k=3", headers=headers)
    assert padded.json()["strategy"] != "popular"  # it knows u9's history
    assert "T1" not in titles(padded)  # and leaves out what u9 saw
    blank = client.get("/v1/recommend/users/%20%20", headers=headers)
    assert blank.status_code == 422 and "at least 1 character" in blank.text


def test_feedback_refers_to_a_served_list(api: tuple[TestClient, dict[str, str]]) -> None:
    client, headers = api
    served = client.get("/v1/recommend/items/S1/similar?k=2", headers=headers).json()
    clicked = event(5, "u9", served["items"][0]["item_id"], "click")
    clicked["recommendation_id"] = served["recommendation_id"]
    assert client.post("/v1/recommend/events", json=clicked, headers=headers).status_code == 200
    clicked.update(event_id="other", recommendation_id="00000000-0000-4000-8000-000000000000")
    refused = client.post("/v1/recommend/events", json=clicked, headers=headers)
    assert refused.status_code == 422 and "unknown recommendation id" in refused.text
    listed = {entry["item_id"] for entry in served["items"]}
    elsewhere = next(row[0] for row in ITEMS if row[0] not in listed | {"S1"})
    stray = event(7, "u9", elsewhere, "click", recommendation_id=served["recommendation_id"])
    refused = client.post("/v1/recommend/events", json=stray, headers=headers)
    assert refused.status_code == 422, refused.text  # and not counted below
    assert f"item {elsewhere!r} was not in recommendation" in refused.text

    # The stats count the served lists and the feedback sent with their ids.
    bought = event(6, "u9", served["items"][1]["item_id"], "purchase")
    bought["recommendation_id"] = served["recommendation_id"]
    assert client.post("/v1/recommend/events", json=bought, headers=headers).status_code == 200
    client.post("/v1/recommend/query", json={"text": "a warm bag"}, headers=headers)
    stats = client.get("/v1/recommend/stats", headers=headers)
    assert stats.status_code == 200, stats.text
    by_kind = stats.json()["by_kind"]
    assert by_kind["similar"] == {"lists": 1, "with_feedback": 1, "feedback_rate": 1.0,
                                  "events": {"click": 1, "purchase": 1}}  # fmt: skip
    assert by_kind["query"] == {"lists": 1, "with_feedback": 0, "feedback_rate": 0.0,
                                "events": {}}  # fmt: skip
    assert stats.json()["by_encoder"] == {
        "model:all-MiniLM-L6-v2": {"lists": 2, "with_feedback": 1, "feedback_rate": 0.5,
                                   "events": {"click": 1, "purchase": 1}},
    }  # fmt: skip
    empty = client.get(
        "/v1/recommend/stats", params={"until": "2020-01-01T00:00:00Z"}, headers=headers
    )
    assert empty.json()["by_kind"] == {}
    refused = client.get("/v1/recommend/stats", params={"since": "2999-01-01T00:00:00Z"},
                         headers=headers)  # fmt: skip
    assert refused.status_code == 422 and "since must be before until" in refused.text

    # A personal list's feedback comes from the user it was made for.
    personal = client.get("/v1/recommend/users/u9?k=2", headers=headers).json()
    other = event(8, "someone-else", personal["items"][0]["item_id"], "cart",
                  recommendation_id=personal["recommendation_id"])  # fmt: skip
    refused = client.post("/v1/recommend/events", json=other, headers=headers)
    assert refused.status_code == 422 and "made for another user" in refused.text


def test_ids_with_slashes_and_an_item_not_served_yet(
    api: tuple[TestClient, dict[str, str]], service_settings: Settings
) -> None:
    client, headers = api
    shelter = item("SKU/12", "Storm shelter for two", "tents", None, "A light bivouac shelter.")
    created = client.post("/v1/recommend/items", json=shelter, headers=headers)
    assert created.status_code == 200, created.text
    # Stored but not yet read into the lists: "try again", not "unknown item".
    early = client.get("/v1/recommend/items/SKU%2F12/similar", headers=headers)
    assert early.status_code == 409 and "not in the lists yet" in early.text, early.text
    assert client.get("/v1/recommend/items/SKU%2F12", headers=headers).json()["id"] == "SKU/12"
    embed_and_refresh(client, service_settings, created.json()["embedding_job_id"])
    similar = client.get("/v1/recommend/items/SKU/12/similar?k=2", headers=headers)
    assert len(titles(similar)) == 2
    viewed = event(1, "shop/u1", "SKU/12")
    assert client.post("/v1/recommend/events", json=viewed, headers=headers).status_code == 200
    client.app.state.recommend.state.refresh_behaviour()
    mine = client.get("/v1/recommend/users/shop%2Fu1?k=3", headers=headers)
    assert mine.status_code == 200 and mine.json()["strategy"] == "personal", mine.text
    assert client.delete("/v1/recommend/items/SKU%2F12", headers=headers).status_code == 204
    assert client.get("/v1/recommend/items/SKU/12", headers=headers).json()["active"] is False


def test_bad_requests_get_clear_errors(api: tuple[TestClient, dict[str, str]]) -> None:
    client, headers = api
    assert client.get("/v1/recommend/items/NOPE/similar", headers=headers).status_code == 404
    assert client.get("/v1/recommend/users/u1?k=0", headers=headers).status_code == 422
    assert (
        client.post("/v1/recommend/query", json={"text": " "}, headers=headers).status_code == 422
    )
    no_title = client.post("/v1/recommend/items", json={"id": "X"}, headers=headers)
    assert no_title.status_code == 422 and "title" in no_title.text
    backwards = {"arguments": {"epochs": -3}}  # it trained nothing (and queued a job) before
    trained = client.post("/v1/recommend/train", json=backwards, headers=headers)
    assert trained.status_code == 422 and "epochs: Input should be greater than 0" in trained.text
    assert client.get("/v1/recommend/users/u1").status_code == 401
    other = key_for(client.app.state.settings, "support")
    assert client.get("/v1/recommend/users/u1", headers=other).status_code == 403


def test_items_are_id_and_metadata_on_the_wire_and_the_tables_names_are_accepted_too(
    api: tuple[TestClient, dict[str, str]],
) -> None:
    client, headers = api
    shown = client.get(f"/v1/recommend/items/{ITEMS[0][0]}", headers=headers).json()
    assert shown == {
        "id": ITEMS[0][0],
        "title": ITEMS[0][1],
        "description": ITEMS[0][4],
        "tags": [ITEMS[0][2]],
        "category": ITEMS[0][2],
        "series": ITEMS[0][3],
        "metadata": {"price_eur": 100},
        "active": True,
    }
    older = {"external_id": "OLD-1", "title": "Bivvy bag", "attributes": {"weight_g": 300}}
    stored = client.post("/v1/recommend/items", json=older, headers=headers)
    assert stored.status_code == 200 and stored.json()["created"] == 1, stored.text
    assert client.get("/v1/recommend/items/OLD-1", headers=headers).json()["metadata"] == {
        "weight_g": 300
    }
    both = client.post(
        "/v1/recommend/items", json={**older, "id": "OLD-2"}, headers=headers
    )  # one item, two ids: refused, not guessed
    assert both.status_code == 422 and "send 'id' or 'external_id'" in both.text, both.text


def test_changed_text_is_embedded_again_and_a_restart_reuses_the_index(
    api: tuple[TestClient, dict[str, str]], service_settings: Settings
) -> None:
    client, headers = api
    same = client.post("/v1/recommend/items", json=item(*ITEMS[0]), headers=headers).json()
    assert same["unchanged"] == 1 and same["embedding_job_id"] is None
    changed = item(*ITEMS[10])
    changed["description"] = "Carbon paddle that splits into four for hiking to lakes."
    reply = client.post("/v1/recommend/items", json=changed, headers=headers).json()
    assert reply["updated"] == 1 and reply["to_embed"] == 1
    embed_and_refresh(client, service_settings, reply["embedding_job_id"])
    with get_session_factory(service_settings.database_url)() as session:
        assert session.scalar(select(func.count()).select_from(ItemEmbedding)) == len(ITEMS)

    with TestClient(create_service(service_settings)) as restarted:
        state = restarted.app.state.recommend.state
        state.refresh()  # (the lifespan may have done it already): vectors from the saved index
        assert state.index is not None and len(state.index) == len(ITEMS)
        assert state.index.size == len(ITEMS) + 1  # the saved index kept its retired slot
        assert titles(restarted.get("/v1/recommend/items/K1/similar?k=1", headers=headers)) == [
            "K2"
        ]


def test_bulk_files_over_http(api: tuple[TestClient, dict[str, str]]) -> None:
    client, headers = api
    csv_items = (
        b"id,title,category,price_eur,metadata\n"
        b'N1,Trekking poles,accessories,59,"{""pair"": true}"\n'
    )
    imported = client.post(
        "/v1/recommend/items/import",
        content=csv_items,
        headers={**headers, "Content-Type": "text/csv"},
    )
    assert imported.status_code == 200, imported.text
    assert imported.json()["created"] == 1 and imported.json()["embedding_job_id"]
    assert client.get("/v1/recommend/items/N1", headers=headers).json()["metadata"] == {
        "pair": True,  # the metadata column's JSON, and any other column
        "price_eur": 59,
    }
    bad = client.post(
        "/v1/recommend/events/import",
        content=b'{"user_id": "u", "item_id": "N1", "type": "view"}\n{"user_id": "u"}\n',
        headers={**headers, "Content-Type": "application/x-ndjson"},
    )
    assert bad.status_code == 422 and [e["line"] for e in bad.json()["detail"]["errors"]] == [2]
    unknown = client.post(  # well formed, but line 4 names an item the catalogue lacks
        "/v1/recommend/events/import",
        content=b"event_id,user_id,item_id,type\nx0,u,N1,view\nx0b,u,N1,click\nx0c,u,ZZ,view\n",
        headers={**headers, "Content-Type": "text/csv"},
    )
    assert unknown.status_code == 422, unknown.text
    assert unknown.json()["detail"]["errors"] == [
        {"line": 4, "error": "unknown item 'ZZ': add it to the catalogue first"}
    ]
    both = client.post(  # a line that does not read and one that names an unknown item: one answer
        "/v1/recommend/events/import",
        content=b"event_id,user_id,item_id,type,timestamp\nx0,u,N1,view,yesterday\nx0c,u,ZZ,view,\n",
        headers={**headers, "Content-Type": "text/csv"},
    )
    assert both.status_code == 422, both.text
    errors = both.json()["detail"]["errors"]
    assert [e["line"] for e in errors] == [2, 3] and "unknown item 'ZZ'" in errors[1]["error"]
    good = client.post(
        "/v1/recommend/events/import",
        content=b"event_id,user_id,item_id,type\nx1,u,N1,view\n",
        headers={**headers, "Content-Type": "text/csv"},
    )
    assert good.json() == {"stored": 1, "duplicates": 0}


def test_an_event_file_is_checked_whole_then_stored_a_chunk_at_a_time(
    service_settings: Settings,
) -> None:
    from apps.recommend.settings import load_recommend_settings

    recommend = load_recommend_settings(_env_file=None, import_chunk=2)
    with TestClient(create_service(service_settings, recommend=recommend)) as client:
        headers = key_for(service_settings, "recommend")
        items = {"items": [item(*row) for row in ITEMS[:2]]}
        assert client.post("/v1/recommend/items", json=items, headers=headers).status_code == 200
        ndjson = {**headers, "Content-Type": "application/x-ndjson"}

        def lines(*events: dict) -> bytes:
            return "".join(json.dumps(e) + "\n" for e in events).encode()

        five = [event(n, "u1", "T1" if n % 2 else "T2") for n in range(5)]
        stored = client.post("/v1/recommend/events/import", content=lines(*five), headers=ndjson)
        assert stored.json() == {"stored": 5, "duplicates": 0}
        # An id reused for another event two chunks on: the chunks before it are stored.
        reused = {**event(9, "u2", "T1"), "event_id": "again"}
        file = lines(*five, reused, event(10, "u2", "T2"), {**reused, "user_id": "u3"})
        refused = client.post("/v1/recommend/events/import", content=file, headers=ndjson)
        assert refused.status_code == 422
        assert [e["line"] for e in refused.json()["detail"]["errors"]] == [8]
        assert "the file's first 6 record(s) are stored" in refused.json()["detail"]["message"]
        assert refused.json()["detail"]["stored"] == 6
        with get_session_factory(service_settings.database_url)() as session:
            # The five, and line 6; line 7 shares line 8's chunk, which stored nothing.
            assert session.scalar(select(func.count()).select_from(Interaction)) == 6


def test_the_behaviour_process_does_not_outlive_a_killed_service(
    sqlite_url: str, tmp_path: Path
) -> None:
    """A service killed outright (no shutdown) leaves no orphan behind holding its memory."""
    import subprocess
    import sys

    import psutil

    from tests.conftest import REPO_ROOT

    script = f"""
import asyncio, os
from apps.recommend.service import RecommendService
from apps.recommend.settings import load_recommend_settings
from core.storage.engine import get_session_factory
from tests.conftest import make_settings
settings = make_settings(database_url={sqlite_url!r}, artifacts_dir={str(tmp_path)!r})
recommend = load_recommend_settings(_env_file=None, behaviour_process=True)
service = RecommendService.create(settings, recommend, get_session_factory(settings.database_url))
asyncio.run(service.refresh_behaviour())
print(*[p.pid for p in service._behaviour_pool._processes.values()], flush=True)
os._exit(0)  # as SIGKILL would: no shutdown, no atexit
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (child,) = [int(pid) for pid in done.stdout.split()]
    try:
        _gone, alive = psutil.wait_procs([psutil.Process(child)], timeout=10)
    except psutil.NoSuchProcess:
        alive = []
    assert not alive, "the behaviour process outlived its service"


def test_the_caller_can_leave_items_out_of_every_list(
    api: tuple[TestClient, dict[str, str]],
) -> None:
    """`exclude`: what the page shows or the cart holds stays out, on all three lists; ids
    the catalogue does not hold are ignored; too many is a 422."""
    client, headers = api
    client.post("/v1/recommend/events", json={"events": [event(1, "u5", "T3")]}, headers=headers)
    client.app.state.recommend.state.refresh_behaviour()
    first = titles(client.get("/v1/recommend/items/T1/similar?k=3", headers=headers))
    left_out = client.get(
        "/v1/recommend/items/T1/similar",
        params={"k": 3, "exclude": [first[0], "NOT-IN-CATALOGUE"]},
        headers=headers,
    )
    assert left_out.status_code == 200, left_out.text
    assert first[0] not in titles(left_out) and len(titles(left_out)) == 3
    personal = titles(client.get("/v1/recommend/users/u5?k=3", headers=headers))
    without = client.get("/v1/recommend/users/u5", params={"k": 3, "exclude": personal[:2]},
                         headers=headers)  # fmt: skip
    assert not set(personal[:2]) & set(titles(without))
    query = {"text": "a boat to float down a river", "k": 2, "exclude": ["K2"]}
    found = client.post("/v1/recommend/query", json=query, headers=headers)
    assert "K2" not in titles(found) and "K1" in titles(found)
    too_many = [f"X{n}" for n in range(101)]
    assert client.get("/v1/recommend/items/T1/similar", params={"exclude": too_many},
                      headers=headers).status_code == 422  # fmt: skip
    blank = client.post("/v1/recommend/query", json={"text": "boat", "exclude": [""]},
                        headers=headers)  # fmt: skip
    assert blank.status_code == 422


def test_the_category_cap_reads_further_candidates_to_fill_the_list(
    api: tuple[TestClient, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tent fan's nearest candidates are all tents; at most half of the list may be, so the
    rest comes from further down, not from tents over the cap or a short list."""
    import apps.recommend.recommending as recommending

    client, headers = api
    monkeypatch.setattr(recommending, "CANDIDATES", 2)  # as 200 are for a large catalogue
    views = [event(n, "camper", item_id) for n, item_id in enumerate(["T1", "T3"])]
    assert client.post("/v1/recommend/events", json={"events": views}, headers=headers).is_success
    client.app.state.recommend.state.refresh_behaviour()
    listed = client.get("/v1/recommend/users/camper?k=4", headers=headers).json()["items"]
    categories = [ITEMS_BY_ID[entry["item_id"]][2] for entry in listed]
    assert len(listed) == 4 and categories.count("tents") <= 2, listed
