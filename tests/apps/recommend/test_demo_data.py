"""The demo data: a catalogue that reads like a real shop's, and shopper events with structure
(personas, series, complements, a narrowing funnel) for both collaborative and text signal."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from apps.recommend.demo.sessions import generate_events, load_catalogue

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
CATEGORIES = {
    "tents",
    "sleeping-bags",
    "sleeping-mats",
    "backpacks",
    "jackets",
    "footwear",
    "stoves-cooking",
    "water",
    "navigation-electronics",
    "climbing",
    "cycling",
    "paddling",
}
KEYS = {"id", "title", "description", "category", "tags", "series", "metadata", "active"}
EVENT_KEYS = {"event_id", "user_id", "item_id", "type", "value", "timestamp"}
EVENT_TYPES = {"view", "click", "cart", "purchase", "rating"}
# Real outdoor brands and trademarked materials: the demo shop invents its own.
REAL_MARKS = (
    "patagonia", "arc'teryx", "arcteryx", "msr", "gore-tex", "goretex", "vibram", "dyneema",
    "primaloft", "polartec", "cordura", "jetboil", "therm-a-rest", "thermarest", "sawyer",
    "garmin", "black diamond", "petzl", "osprey", "north face", "salomon", "hoka", "mammut",
    "deuter", "ortlieb", "big agnes", "sea to summit", "exped", "katadyn", "lifestraw", "scarpa",
    "la sportiva", "salewa", "fjallraven", "fjällräven", "rab", "montane", "hilleberg",
)  # fmt: skip
REAL_MARK = re.compile(r"\b(" + "|".join(re.escape(m) for m in REAL_MARKS) + r")\b")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
WORD = re.compile(r"[\w'-]+")


def sentences(text: str) -> list[str]:
    return [s for s in SENTENCE_END.split(text.strip()) if s]


@pytest.fixture(scope="module")
def catalogue() -> list[dict[str, Any]]:
    return load_catalogue()


@pytest.fixture(scope="module")
def events(catalogue: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return generate_events(catalogue, now=NOW)


def test_catalogue_has_300_items_with_unique_ids_and_titles(catalogue: list[dict]) -> None:
    assert len(catalogue) >= 300
    ids = [i["id"] for i in catalogue]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"OG-\d{4}", i) for i in ids), ids
    titles = [i["title"] for i in catalogue]
    assert len(set(titles)) == len(titles)


def test_every_item_has_exactly_the_keys_with_the_right_types(catalogue: list[dict]) -> None:
    for item in catalogue:
        assert set(item) == KEYS, item["id"]
        assert isinstance(item["title"], str) and item["title"].strip()
        assert isinstance(item["description"], str)
        assert item["category"] in CATEGORIES, item["category"]
        tags = item["tags"]
        assert isinstance(tags, list) and 2 <= len(tags) <= 6, (item["title"], tags)
        assert all(isinstance(t, str) and t == t.lower() and t.strip() == t for t in tags)
        assert len(set(tags)) == len(tags), (item["title"], tags)
        assert item["series"] is None or isinstance(item["series"], str)
        assert isinstance(item["metadata"], dict)
        price = item["metadata"].get("price_eur")
        assert isinstance(price, float) and price > 0, (item["title"], price)
        assert isinstance(item["active"], bool)


def test_categories_are_the_fixed_twelve_each_with_15_items(catalogue: list[dict]) -> None:
    counts = Counter(i["category"] for i in catalogue)
    assert set(counts) == CATEGORIES
    assert min(counts.values()) >= 15, counts


def test_about_a_third_of_items_belong_to_series_of_two_to_five(catalogue: list[dict]) -> None:
    series = defaultdict(list)
    for item in catalogue:
        if item["series"]:
            series[item["series"]].append(item)
    assert all(2 <= len(members) <= 5 for members in series.values()), series.keys()
    assert all(len({i["category"] for i in members}) == 1 for members in series.values())
    share = sum(len(members) for members in series.values()) / len(catalogue)
    assert 0.25 <= share <= 0.45, share


def test_a_handful_of_items_are_discontinued(catalogue: list[dict]) -> None:
    assert 3 <= sum(not i["active"] for i in catalogue) <= 8


def test_descriptions_are_unique_concrete_shop_copy(catalogue: list[dict]) -> None:
    descriptions = [i["description"] for i in catalogue]
    assert len(set(descriptions)) == len(descriptions)
    for item in catalogue:
        text = item["description"]
        assert len(text) >= 80, (item["title"], text)
        assert 2 <= len(sentences(text)) <= 4, (item["title"], text)
    # concrete: most descriptions carry a number (grams, litres, mm, °C, cm)
    assert sum(bool(re.search(r"\d", d)) for d in descriptions) / len(descriptions) >= 0.9


def test_no_two_descriptions_share_a_sentence_of_more_than_8_words(catalogue: list[dict]) -> None:
    first_seen: dict[str, str] = {}
    shared = []
    for item in catalogue:
        for sentence in sentences(item["description"]):
            words = WORD.findall(sentence.lower())
            if len(words) <= 8:
                continue
            key = " ".join(words)
            if key in first_seen and first_seen[key] != item["id"]:
                shared.append((first_seen[key], item["id"], sentence))
            first_seen.setdefault(key, item["id"])
    assert not shared, shared


def test_the_shop_uses_no_real_brand_or_material_trademarks(catalogue: list[dict]) -> None:
    for item in catalogue:
        text = f"{item['title']} {item['description']}".lower()
        assert not REAL_MARK.findall(text), (item["title"], text)


def test_events_are_deterministic_for_a_seed_and_now(catalogue: list[dict]) -> None:
    first = generate_events(catalogue, users=60, seed=3, now=NOW)
    assert first == generate_events(catalogue, users=60, seed=3, now=NOW)
    assert first != generate_events(catalogue, users=60, seed=4, now=NOW)
    later = generate_events(catalogue, users=60, seed=3, now=NOW + timedelta(days=1))
    # a later `now` shifts the same history: same ids, so the backend sees a redelivery
    assert [e["event_id"] for e in later] == [e["event_id"] for e in first]
    shifted = [datetime.fromisoformat(e["timestamp"]) - timedelta(days=1) for e in later]
    assert shifted == [datetime.fromisoformat(e["timestamp"]) for e in first]


def test_events_are_well_formed(catalogue: list[dict], events: list[dict]) -> None:
    ids = {i["id"] for i in catalogue}
    assert len({e["event_id"] for e in events}) == len(events)
    for event in events:
        assert set(event) == EVENT_KEYS
        assert event["item_id"] in ids
        assert event["type"] in EVENT_TYPES
        assert re.fullmatch(r"u\d{4}", event["user_id"])
        if event["type"] == "rating":
            assert isinstance(event["value"], float) and 1 <= event["value"] <= 5, event
        else:
            assert event["value"] is None, event


def test_timestamps_are_utc_sorted_and_within_the_last_60_days(events: list[dict]) -> None:
    times = [datetime.fromisoformat(e["timestamp"]) for e in events]
    assert all(t.utcoffset() == timedelta(0) for t in times)
    assert times == sorted(times)
    assert NOW - timedelta(days=60) <= times[0] and times[-1] <= NOW
    assert times[-1] - times[0] > timedelta(days=50)  # spread over the window, not bunched


def test_every_user_has_events_and_some_are_cold(events: list[dict]) -> None:
    per_user = Counter(e["user_id"] for e in events)
    assert len(per_user) == 400
    assert sum(n <= 3 for n in per_user.values()) / len(per_user) >= 0.05
    assert sorted(per_user.values())[len(per_user) // 2] >= 10  # the median user has history


def test_the_funnel_narrows_and_follows_views(events: list[dict]) -> None:
    counts = Counter(e["type"] for e in events)
    assert counts["view"] > counts["click"] > counts["cart"] > counts["purchase"] > 0
    assert counts["rating"] > 0
    steps: dict[tuple[str, str], list[str]] = defaultdict(list)
    for event in events:
        steps[event["user_id"], event["item_id"]].append(event["type"])
    order = ["view", "click", "cart", "purchase", "rating"]
    for key, types in steps.items():
        assert types[0] == "view", (key, types)
        for kind in order[1:]:
            if kind in types:  # each step is preceded by the one before it
                earlier = types[: types.index(kind)]
                assert order[order.index(kind) - 1] in earlier, (key, types)


def test_users_concentrate_on_their_personas(catalogue: list[dict], events: list[dict]) -> None:
    category = {i["id"]: i["category"] for i in catalogue}
    per_user: dict[str, list[str]] = defaultdict(list)
    for event in events:
        per_user[event["user_id"]].append(category[event["item_id"]])
    shares = [
        Counter(cats).most_common(1)[0][1] / len(cats)
        for cats in per_user.values()
        if len(cats) >= 10
    ]
    assert shares and sum(shares) / len(shares) >= 0.3


def test_popularity_is_skewed(events: list[dict]) -> None:
    views = sorted(Counter(e["item_id"] for e in events if e["type"] == "view").values())
    top = views[-max(1, len(views) // 10) :]
    assert sum(top) / sum(views) >= 0.25  # the top tenth of items draws a quarter of views


def test_discontinued_items_appear_only_in_old_sessions(
    catalogue: list[dict], events: list[dict]
) -> None:
    discontinued = {i["id"] for i in catalogue if not i["active"]}
    cutoff = NOW - timedelta(days=30)
    old = [e for e in events if e["item_id"] in discontinued and e["type"] != "rating"]
    assert all(datetime.fromisoformat(e["timestamp"]) < cutoff for e in old), old


def test_a_naive_now_is_refused(catalogue: list[dict]) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        generate_events(catalogue, users=5, now=datetime(2026, 11, 28, 12))
