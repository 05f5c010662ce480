"""Synthetic shoppers for the demo outdoor-gear shop: interaction events with real structure.

Each user holds one to three personas (winter mountaineer, ultralight hiker, bikepacker, ...),
and each persona maps to the categories and tags its people buy from. A user also has one
"mission" category per persona (the tent or the shoes they are shopping for), which their
sessions come back to. A session starts from an anchor item in a persona's pool and browses on
to series siblings (the other versions of a shoe), complementary items (tent, mat and bag for the
same season; stove, fuel and pots) and similar items in the same category. About 15% of views
are noise taken from the whole shop. Each view may lead to a click, a click to a cart, a cart
to a purchase, and some purchases are rated days later, so the funnel narrows the way a real
shop's does. Popularity is skewed: within a category a few bestsellers take most of the traffic.
A tenth of the users are cold: one short visit of one to three events. Discontinued items only
appear in sessions more than 30 days old, from before they were withdrawn (a rating of one may
still come later).

Everything comes from one `random.Random(seed)` and offsets from `now`, so a seed and a `now`
give the same events, and the same event ids for any `now`.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

CATALOGUE = Path(__file__).resolve().parent / "catalogue.jsonl"
HISTORY_DAYS = 60
DISCONTINUED_DAYS = 30  # discontinued items show up only in sessions older than this
COLD_USER_SHARE = 0.10
SESSION_SPAN = 3 * 3600.0  # longer than any session: 10 items x 4 steps x 240 s
NOISE_SHARE = 0.15
EVENT_TYPES = ("view", "click", "cart", "purchase", "rating")

Item = dict[str, Any]
Event = dict[str, Any]


@dataclass(frozen=True)
class Persona:
    """A kind of shopper: how much they look at each category, and the tags that are theirs."""

    name: str
    categories: dict[str, float]
    tags: frozenset[str]


def _persona(name: str, categories: str, tags: str) -> Persona:
    """`categories` reads "tents:3 backpacks:2": how often the persona looks at each one."""
    weights = {c: float(w) for c, w in (pair.split(":") for pair in categories.split())}
    return Persona(name, weights, frozenset(tags.split()))


PERSONAS: tuple[Persona, ...] = (
    _persona(
        "winter-mountaineer",
        "jackets:3 climbing:3 tents:2 sleeping-bags:2 footwear:2 sleeping-mats:1 "
        "stoves-cooking:1 navigation-electronics:1 backpacks:1",
        "winter 4-season mountaineering alpine expedition ski-touring ice-climbing avalanche "
        "crampons glacier ice-axe",
    ),
    _persona(
        "ultralight-hiker",
        "tents:3 backpacks:3 sleeping-bags:2 sleeping-mats:2 stoves-cooking:2 water:2 jackets:1",
        "ultralight thru-hiking backpacking quilt frameless titanium alcohol trekking-pole",
    ),
    _persona(
        "family-camper",
        "tents:3 sleeping-bags:2 sleeping-mats:2 stoves-cooking:2 water:1 paddling:1 cycling:1 "
        "backpacks:1 jackets:1 footwear:1 navigation-electronics:1 climbing:0.5",
        "family car-camping kids picnic campfire",
    ),
    _persona(
        "bikepacker",
        "cycling:4 tents:2 sleeping-bags:1 sleeping-mats:1 stoves-cooking:1 water:1 "
        "navigation-electronics:1 jackets:1",
        "bikepacking cycling gravel touring packable panniers",
    ),
    _persona(
        "paddler",
        "paddling:5 navigation-electronics:1 footwear:1",
        "paddling kayak canoe sup packraft dry-bag pfd sea-kayak whitewater",
    ),
    _persona(
        "trail-runner",
        "footwear:4 backpacks:2 jackets:2 water:2 navigation-electronics:2",
        "trail-running running mountain-running ultra fastpacking fell-running night-running "
        "soft-flask hydration gps-watch heart-rate",
    ),
    _persona(
        "climber",
        "climbing:5 footwear:2 backpacks:1 jackets:1",
        "climbing bouldering sport trad approach belay multipitch crash-pad chalk rope "
        "quickdraw indoor",
    ),
    _persona(
        "day-hiker",
        "footwear:3 backpacks:3 jackets:2 navigation-electronics:2 water:1 stoves-cooking:0.5",
        "hiking day-hike walking trekking compass navigation hut-to-hut map headlamp flask "
        "socks insoles",
    ),
)

# What people look at next to an item of a category: the sleep system goes together, a stove
# goes with fuel, pots and water, a jacket with boots and a pack.
COMPLEMENTS: dict[str, tuple[str, ...]] = {
    "tents": ("sleeping-mats", "sleeping-bags"),
    "sleeping-bags": ("sleeping-mats", "tents"),
    "sleeping-mats": ("sleeping-bags", "tents"),
    "stoves-cooking": ("stoves-cooking", "water"),
    "water": ("stoves-cooking", "water"),
    "backpacks": ("water", "jackets"),
    "jackets": ("footwear", "backpacks"),
    "footwear": ("footwear", "jackets", "backpacks"),
    "climbing": ("climbing", "footwear"),
    "cycling": ("cycling", "tents", "sleeping-mats"),
    "paddling": ("paddling", "navigation-electronics"),
    "navigation-electronics": ("navigation-electronics", "backpacks"),
}

# The funnel: chance that a view is clicked, a click carted, a cart bought, a purchase rated.
CLICK_RATE, CART_RATE, PURCHASE_RATE, RATING_RATE = 0.45, 0.3, 0.55, 0.4


def load_catalogue() -> list[Item]:
    """The demo catalogue: 312 outdoor-gear items, one JSON object per line of catalogue.jsonl."""
    with CATALOGUE.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


@dataclass
class _Shop:
    """The catalogue as the generator sees it: popularity, persona pools, series, quality."""

    items: list[Item]
    popularity: dict[str, float]
    quality: dict[str, float]
    pools: dict[str, list[Item]]  # persona name -> the items that persona shops from
    series: dict[str, list[Item]]  # series name -> its items

    @classmethod
    def build(cls, items: Sequence[Item], rng: random.Random) -> _Shop:
        by_category: dict[str, list[Item]] = defaultdict(list)
        for item in items:
            by_category[item["category"]].append(item)
        popularity: dict[str, float] = {}
        for members in by_category.values():
            ranked = rng.sample(members, len(members))
            for rank, item in enumerate(ranked):  # Zipf: a few bestsellers per category
                popularity[item["id"]] = 1.0 / (rank + 1) ** 1.1
        series: dict[str, list[Item]] = defaultdict(list)
        for item in items:
            if item.get("series"):
                series[item["series"]].append(item)
        pools = {
            p.name: [i for i in items if i["category"] in p.categories and p.tags & set(i["tags"])]
            for p in PERSONAS
        }
        quality = {i["id"]: rng.uniform(3.0, 4.7) for i in items}
        return cls(list(items), popularity, quality, pools, dict(series))

    def pick(
        self,
        rng: random.Random,
        candidates: Sequence[Item],
        base: Item | None = None,
        boost: Callable[[Item, Item], float] | None = None,
    ) -> Item:
        """A popularity-weighted choice, times `boost(base, item)` when given."""
        weights = [self.popularity[i["id"]] for i in candidates]
        if base is not None and boost is not None:
            weights = [w * boost(base, i) for w, i in zip(weights, candidates, strict=True)]
        return rng.choices(candidates, weights=weights)[0]


def _shared_tags(a: Item, b: Item) -> int:
    return len(set(a["tags"]) & set(b["tags"]))


@dataclass
class _Shopper:
    """One user: personas with weights, a mission category per persona."""

    user_id: str
    personas: list[Persona]
    weights: list[float]
    missions: dict[str, str]


def _make_shopper(user_id: str, rng: random.Random) -> _Shopper:
    count = rng.choices((1, 2, 3), weights=(0.5, 0.35, 0.15))[0]
    personas = rng.sample(PERSONAS, count)
    weights = [1.0, 0.5, 0.3][:count]  # the first persona is who they mostly are
    missions = {
        p.name: rng.choices(list(p.categories), weights=list(p.categories.values()))[0]
        for p in personas
    }
    return _Shopper(user_id, personas, weights, missions)


def _complement_weight(base: Item, item: Item) -> float:
    """Complements share tags (canister stove and canister gas) and, for the sleep system, a
    season: a 4-season tent goes with a winter mat, not a summer one."""
    fit = 1.0
    season, other = base["metadata"].get("season"), item["metadata"].get("season")
    if season is not None and other is not None:
        fit = 3.0 if season == other else 0.3
    return (1 + _shared_tags(base, item)) * fit


def _similar_weight(base: Item, item: Item) -> float:
    return 1 + 2 * _shared_tags(base, item)


def _browse(
    shop: _Shop, shopper: _Shopper, persona: Persona, views: int, old: bool, rng: random.Random
) -> list[Item]:
    """The items one session looks at, in order: an anchor, then related items."""
    everything = [i for i in shop.items if i["active"] or old]
    pool = [i for i in shop.pools[persona.name] if i["active"] or old]
    mission = shopper.missions[persona.name]
    categories = [c for c in persona.categories if any(i["category"] == c for i in pool)]
    weights = [persona.categories[c] * (4.0 if c == mission else 1.0) for c in categories]
    category = rng.choices(categories, weights=weights)[0]
    seen = [shop.pick(rng, [i for i in pool if i["category"] == category])]
    seen_ids = {seen[0]["id"]}
    for _ in range(views * 3):  # a few tries per view: related items may all be seen already
        if len(seen) >= views:
            break
        base = seen[-1] if rng.random() < 0.7 else rng.choice(seen)
        siblings = [i for i in shop.series.get(base["series"] or "", []) if i["active"] or old]
        roll = rng.random()
        boost: Callable[[Item, Item], float] | None = None
        if roll < NOISE_SHARE:
            candidates = everything
        elif roll < 0.4 and len(siblings) > 1:
            candidates = siblings
        elif roll < 0.7:
            wanted = COMPLEMENTS[base["category"]]
            candidates = [i for i in pool if i["category"] in wanted] or [
                i for i in everything if i["category"] in wanted
            ]
            boost = _complement_weight
        else:
            candidates = [i for i in pool if i["category"] == base["category"]] or pool
            boost = _similar_weight
        candidates = [i for i in candidates if i["id"] not in seen_ids]
        if candidates:
            seen.append(shop.pick(rng, candidates, base, boost))
            seen_ids.add(seen[-1]["id"])
    return seen


def _rating(shop: _Shop, item: Item, rng: random.Random) -> float:
    return float(min(5, max(1, round(rng.gauss(shop.quality[item["id"]], 0.9)))))


def _session_events(
    shop: _Shop, items: list[Item], start: float, cap: int | None, rng: random.Random
) -> list[tuple[float, str, str, float | None]]:
    """(seconds before now, item id, type, value) for one session that began `start` s ago."""
    events: list[tuple[float, str, str, float | None]] = []
    clock = start
    for item in items:
        steps = ["view"]
        if rng.random() < CLICK_RATE:
            steps.append("click")
            if rng.random() < CART_RATE:
                steps.append("cart")
                if rng.random() < PURCHASE_RATE:
                    steps.append("purchase")
        for kind in steps:
            clock -= rng.uniform(10, 240)
            events.append((clock, item["id"], kind, None))
        if "purchase" in steps and rng.random() < RATING_RATE:
            rated = clock - rng.uniform(2, 14) * 86400  # after delivery and a trip or two
            if rated > 0:
                events.append((rated, item["id"], "rating", _rating(shop, item, rng)))
    return events[:cap] if cap is not None else events


def generate_events(
    items: list[Item], *, users: int = 400, seed: int = 7, now: datetime | None = None
) -> list[Event]:
    """Interaction events for `users` synthetic shoppers over the 60 days before `now`.

    Events are dicts with `event_id`, `user_id`, `item_id` (an item's id), `type`
    (view, click, cart, purchase, rating), `value` (1-5 for ratings, else None) and
    `timestamp` (ISO 8601, UTC), sorted by time. See the module docstring for the structure.
    """
    if not items:
        raise ValueError("generate_events needs catalogue items: pass load_catalogue()")
    if users < 1:
        raise ValueError(f"users must be at least 1, got {users}")
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        raise ValueError(f"now must be timezone-aware, got naive {now.isoformat()}; use UTC")
    now = now.astimezone(UTC)
    rng = random.Random(seed)
    shop = _Shop.build(items, rng)
    width = max(4, len(str(users)))
    cold = set(rng.sample(range(users), round(users * COLD_USER_SHARE)))
    history = HISTORY_DAYS * 86400.0
    rows: list[tuple[float, str, int, str, str, float | None]] = []
    for index in range(users):
        shopper = _make_shopper(f"u{index + 1:0{width}d}", rng)
        if index in cold:
            sessions, cap = 1, rng.randint(1, 3)
        else:
            sessions, cap = 2 + min(int(rng.expovariate(1 / 5)), 23), None
        starts = sorted((rng.uniform(SESSION_SPAN, history) for _ in range(sessions)), reverse=True)
        events: list[tuple[float, str, str, float | None]] = []
        for start in starts:
            persona = rng.choices(shopper.personas, weights=shopper.weights)[0]
            views = 1 + min(int(rng.expovariate(1 / 2.5)), 9)
            old = start - SESSION_SPAN > DISCONTINUED_DAYS * 86400
            browsed = _browse(shop, shopper, persona, views, old, rng)
            events += _session_events(shop, browsed, start, cap, rng)
        for seq, (ago, item_id, kind, value) in enumerate(events):
            rows.append((round(ago, 3), shopper.user_id, seq, item_id, kind, value))
    rows.sort(key=lambda r: (-r[0], r[1], r[2]))
    return [
        {
            "event_id": f"demo-{seed}-{n:06d}",
            "user_id": user_id,
            "item_id": item_id,
            "type": kind,
            "value": value,
            "timestamp": (now - timedelta(seconds=ago)).isoformat(),
        }
        for n, (ago, user_id, _, item_id, kind, value) in enumerate(rows, start=1)
    ]
