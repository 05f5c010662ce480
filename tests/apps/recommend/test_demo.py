"""The demo shop end to end: its catalogue and shoppers loaded, embedded with MiniLM, and the
three lists the demo's instructions show."""

from __future__ import annotations

from collections import Counter

from fastapi.testclient import TestClient

from apps.recommend.demo import DEMO_USER, load_demo
from apps.recommend.demo.sessions import load_catalogue
from apps.recommend.embeddings import embed_pending
from apps.recommend.settings import load_recommend_settings
from core.settings import Settings
from core.storage.engine import get_session_factory, session_scope
from tests.apps.sentiment.test_api import key_for
from textsuite.service import create_service


def test_demo_shop_lists(service_settings: Settings) -> None:
    factory = get_session_factory(service_settings.database_url)
    with session_scope(factory) as session:
        first = load_demo(session)
    assert first.items.created == len(load_catalogue()) and first.events.stored > 5000
    with session_scope(factory) as session:
        again = load_demo(session)
    assert again.items.unchanged == first.items.created and again.events.stored == 0
    recommend = load_recommend_settings(_env_file=None)
    assert embed_pending(service_settings, recommend, factory)["embedded"] == first.items.created

    catalogue = {item["id"]: item for item in load_catalogue()}
    with TestClient(create_service(service_settings)) as client:
        client.app.state.recommend.state.refresh()
        client.app.state.recommend.state.refresh_behaviour()
        headers = key_for(service_settings, "recommend")

        mine = client.get(f"/v1/recommend/users/{DEMO_USER}?k=10", headers=headers).json()
        assert mine["strategy"] == "personal" and len(mine["items"]) == 10
        assert all(r["reason"].startswith("because you ") for r in mine["items"])
        assert all(catalogue[r["item_id"]]["active"] for r in mine["items"])
        categories = Counter(catalogue[r["item_id"]]["category"] for r in mine["items"])
        assert max(categories.values()) <= 5  # no category takes more than half the list
        series = Counter(catalogue[r["item_id"]]["series"] for r in mine["items"])
        series.pop(None, None)
        assert all(count == 1 for count in series.values())

        similar = client.get("/v1/recommend/items/OG-0004/similar?k=5", headers=headers).json()
        kinds = [catalogue[r["item_id"]]["category"] for r in similar["items"]]
        assert kinds[:2] == ["tents", "tents"], similar  # alternatives first
        assert all(r["reason"] == "similar to Northcairn Ridgeback 2" for r in similar["items"])

        found = client.post(
            "/v1/recommend/query",
            json={"text": "a warm sleeping bag for winter camping", "k": 5},
            headers=headers,
        ).json()
        top = catalogue[found["items"][0]["item_id"]]
        assert top["category"] == "sleeping-bags", found
