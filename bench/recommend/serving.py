"""The serving path at scale: a scratch database holding N synthetic items (with stored vectors)
and their users' events, the service's in-memory state built from it, and the latency of the
three lists as the API computes them (database reads and the stored recommendation included;
HTTP excluded)."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.common import percentile_ms


@dataclass(frozen=True)
class ServingResult:
    items: int
    events: int
    index_kind: str
    load_s: float  # database -> state (vectors read, index built)
    behaviour_s: float
    p50_ms: dict[str, float]
    p99_ms: dict[str, float]


def build_world(
    url: str, vectors: np.ndarray, family: np.ndarray, events: list[tuple[int, int]]
) -> None:
    """Insert items, their vectors (as the base encoder's) and events, in bulk."""
    from sqlalchemy import insert

    import migrations
    from apps.recommend.models import EventType, Interaction, Item, ItemEmbedding
    from core.storage.engine import get_engine

    migrations.upgrade(url)
    engine = get_engine(url)
    now = dt.datetime.now(dt.UTC)
    ids = [uuid.uuid4() for _ in range(len(vectors))]
    chunk = 5_000
    with engine.begin() as connection:
        for start in range(0, len(ids), chunk):
            rows = range(start, min(start + chunk, len(ids)))
            connection.execute(
                insert(Item),
                [
                    {
                        "id": ids[i],
                        "external_id": f"item-{i}",
                        "title": f"Item {i}",
                        "tags": [],
                        "category": f"c{family[i] % 20}",
                        "attributes": {},
                        "active": True,
                        "text_hash": "synthetic",
                        "created_at": now,
                        "updated_at": now,
                    }
                    for i in rows
                ],
            )
            connection.execute(
                insert(ItemEmbedding),
                [
                    {
                        "item_id": ids[i],
                        "encoder": "model:all-MiniLM-L6-v2",
                        "text_hash": "synthetic",
                        "vector": vectors[i].astype("<f4").tobytes(),
                        "created_at": now,
                    }
                    for i in rows
                ],
            )
        for start in range(0, len(events), chunk):
            connection.execute(
                insert(Interaction),
                [
                    {
                        "id": uuid.uuid4(),
                        "event_id": f"e{n}",
                        "user_id": f"u{user}",
                        "item_id": ids[item],
                        "type": EventType.VIEW,
                        "occurred_at": now - dt.timedelta(seconds=len(events) - n),
                        "received_at": now,
                    }
                    for n, (user, item) in enumerate(events[start : start + chunk], start=start)
                ],
            )


def measure(
    url: str,
    workdir: Path,
    query_vectors: np.ndarray,
    users: int,
    n_items: int,
    events: int,
    ann_threshold: int,
    requests: int,
) -> ServingResult:
    from apps.recommend.recommending import (
        Filters,
        recommend_for_user,
        search_items,
        similar_items,
    )
    from apps.recommend.settings import load_recommend_settings
    from apps.recommend.state import CatalogueState
    from core.settings import load_settings
    from core.storage.engine import get_session_factory

    settings = load_settings(_env_file=None, database_url=url, artifacts_dir=workdir / "artifacts")
    recommend = load_recommend_settings(_env_file=None, ann_threshold=ann_threshold)
    factory = get_session_factory(url)
    state = CatalogueState(settings, recommend, factory)
    started = time.perf_counter()
    state.refresh()
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    state.refresh_behaviour()
    behaviour_s = time.perf_counter() - started
    rng = np.random.default_rng(3)
    timings: dict[str, list[float]] = {"user": [], "similar": [], "query": []}
    with factory() as session:
        for n in range(requests):
            user, item = f"u{rng.integers(users)}", f"item-{rng.integers(n_items)}"
            vector = query_vectors[n % len(query_vectors)]
            for name in ("user", "similar", "query"):
                started = time.perf_counter()
                if name == "user":
                    recommend_for_user(state, session, user, 10, Filters(), recommend)
                elif name == "similar":
                    similar_items(state, session, item, 10, Filters(), recommend)
                else:
                    search_items(
                        state, session, "query", vector, 10, Filters(False, False), recommend
                    )
                timings[name].append(time.perf_counter() - started)
    return ServingResult(
        items=n_items,
        events=events,
        index_kind=state.index.kind if state.index else "none",
        load_s=load_s,
        behaviour_s=behaviour_s,
        p50_ms={k: percentile_ms(v, 50) for k, v in timings.items()},
        p99_ms={k: percentile_ms(v, 99) for k, v in timings.items()},
    )


def http_latency(url: str, workdir: Path, users: int, n_items: int, requests: int) -> dict:
    """p50/p99 of `GET /v1/recommend/users/{id}?k=10` and `.../items/{id}/similar` over HTTP,
    one request at a time, against `textsuite serve` in its own process (its index loaded from
    what `measure` saved in `workdir`)."""
    import httpx

    from bench.support.load import running_service
    from core.security import create_api_key
    from core.storage.engine import get_session_factory, session_scope

    with session_scope(get_session_factory(url)) as session:
        key = create_api_key(session, "bench", ["recommend"])[1]
    headers = {"X-API-Key": key}
    rng = np.random.default_rng(5)
    timings: dict[str, list[float]] = {"user": [], "similar": []}
    with running_service(url, workdir / "artifacts") as base, httpx.Client(base_url=base) as client:
        deadline = time.monotonic() + 1800
        while not _warm(client, headers):  # index loaded, and behaviour (popular items) too
            if time.monotonic() > deadline:
                raise RuntimeError("the service never loaded its index")
            time.sleep(1.0)
        for _ in range(requests):
            paths = {
                "user": f"/v1/recommend/users/u{rng.integers(users)}?k=10",
                "similar": f"/v1/recommend/items/item-{rng.integers(n_items)}/similar?k=10",
            }
            for name, path in paths.items():
                started = time.perf_counter()
                response = client.get(path, headers=headers)
                timings[name].append(time.perf_counter() - started)
                response.raise_for_status()
    return {
        "http_p50_ms": {k: percentile_ms(v, 50) for k, v in timings.items()},
        "http_p99_ms": {k: percentile_ms(v, 99) for k, v in timings.items()},
    }


def _warm(client, headers: dict[str, str]) -> bool:
    similar = client.get("/v1/recommend/items/item-0/similar", headers=headers)
    cold = client.get("/v1/recommend/users/nobody", headers=headers)
    return similar.status_code == 200 and cold.status_code == 200 and bool(cold.json()["items"])
