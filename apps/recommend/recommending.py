"""The three lists: recommended for a user, similar to an item, matching a free-text query.

Each ranks candidates from the vector index (text) and from co-interactions (behaviour) with
`apps.recommend.ranking`, filters (active items only, a category, not already seen), spreads
the list over series and categories, gives each item a short reason, and stores the list as a
`Recommendation` whose id the backend sends back with feedback events.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from sqlalchemy import select
from sqlalchemy import text as sql
from sqlalchemy.orm import Session

from apps.recommend.models import (
    EventType,
    Interaction,
    Item,
    Recommendation,
    RecommendationKind,
)
from apps.recommend.ranking import (
    RankingConfig,
    UserHistory,
    blend,
    event_weights,
    user_profile,
)
from apps.recommend.settings import RecommendSettings
from apps.recommend.state import CatalogueState, ItemFacts
from core.privacy import mask_personal_data

CANDIDATES = 200  # candidates fetched from each source before filtering and diversity
# A reason's words for each kind of event, around the item's title (or "it").
_REASONS = {
    EventType.VIEW: "because you viewed {}",
    EventType.CLICK: "because you looked at {}",
    EventType.CART: "because you added {} to your cart",
    EventType.PURCHASE: "because you bought {}",
    EventType.RATING: "because you rated {}",
}


class UnknownItem(LookupError):
    def __init__(self, external_id: str) -> None:
        super().__init__(f"unknown item {external_id!r}: no item with this external id")
        self.external_id = external_id


class ItemNotEmbedded(LookupError):
    """The item exists but its embedding is not stored yet (the embedding job is behind)."""


@dataclass(frozen=True)
class Recommended:
    facts: ItemFacts
    score: float
    reason: str


@dataclass(frozen=True)
class RecommendationList:
    id: uuid.UUID
    kind: RecommendationKind
    items: list[Recommended]
    strategy: str  # "personal", "popular", "similar", "query"


@dataclass(frozen=True)
class Filters:
    category: str | None = None
    exclude_seen: bool = True
    exclude: frozenset[str] = frozenset()  # external ids the caller leaves out (cart, page)

    def excluded(self, state: CatalogueState) -> set[str]:
        """The catalogue keys of `exclude` (ids the catalogue does not hold are ignored)."""
        return {key for item in self.exclude if (key := state.by_external.get(item)) is not None}


def recommend_for_user(
    state: CatalogueState,
    session: Session,
    user_id: str,
    k: int,
    filters: Filters,
    recommend: RecommendSettings,
) -> RecommendationList:
    """Personal recommendations; popular-recently items for a user with no usable history."""
    config = recommend.ranking()
    # One read: every event of the user, newest first (the profile takes the most recent;
    # `exclude_seen` takes them all).
    events = session.execute(
        select(Interaction.item_id, Interaction.type, Interaction.value)
        .where(Interaction.user_id == user_id)
        .order_by(Interaction.occurred_at.desc(), Interaction.id)
    ).all()
    rows = events[: config.history][::-1]  # oldest first
    seen = {str(item_id) for item_id, _, _ in events} if filters.exclude_seen else set()
    with state.lock:
        seen |= filters.excluded(state)
        history = [(str(item_id), kind, value) for item_id, kind, value in rows]
        known = [h for h in history if h[0] in state.items]
        if any(_liked(kind, value, config) for _, kind, value in known):
            ranked = _personal(state, known, seen, k, filters, config, recommend)
            strategy = "personal"
        else:
            ranked = _popular(state, seen, k, filters, recommend)
            strategy = "popular"
    request = {"k": k, "category": filters.category, "exclude_seen": filters.exclude_seen,
               "exclude": sorted(filters.exclude)}  # fmt: skip
    return _store(session, state, RecommendationKind.USER, ranked, strategy, request, user_id)


def _liked(kind: EventType, value: float | None, config: RankingConfig) -> bool:
    """Whether an event shows interest: any but a rating under the scale's midpoint. A user
    with only such dislikes has nothing to go on but what others like (the popular list)."""
    return kind is not EventType.RATING or value is None or value >= config.rating_midpoint


def _personal(
    state: CatalogueState,
    history: list[tuple[str, EventType, float | None]],
    seen: set[str],
    k: int,
    filters: Filters,
    config: RankingConfig,
    recommend: RecommendSettings,
) -> list[Recommended]:
    keys = [key for key, _, _ in history]
    events = UserHistory(
        np.arange(len(keys)), [t.value for _, t, _ in history], [v for _, _, v in history]
    )
    weights = event_weights(events, config)  # (H,)
    behaviour = state.behaviour
    related = _related(state, keys)  # (H, B) co-interaction rows of the user's items
    summed = (sp.csr_matrix(weights[None, :]) @ related).tocsr() if related.nnz else None
    profile, vectors = _profile(state, keys, weights)
    mask = _mask(state, filters, seen) if profile is not None else None
    # Each source's best `wanted` candidates; more when the caps leave the list short (a
    # comedy fan's 200 nearest are mostly comedies, and a list of 100 holds 50 at most).
    wanted = CANDIDATES
    while True:
        collaborative: dict[str, float] = {}
        if summed is not None:
            for o in np.argsort(-summed.data)[:wanted]:
                collaborative[behaviour.keys[summed.indices[o]]] = float(summed.data[o])
        text: dict[str, float] = {}
        if profile is not None and state.index is not None:
            text = dict(state.index.search(profile, wanted, mask))
        candidates = [
            key for key in {**collaborative, **text} if _allowed(state, key, filters, seen)
        ]
        if not candidates:
            return _popular(state, seen, k, filters, recommend)
        scores = blend(
            np.array([collaborative.get(key, 0.0) for key in candidates]),
            np.array(
                [text[key] if key in text else _cosine(state, key, profile) for key in candidates]
            ),
            config,
        )
        ranked = [candidates[i] for i in np.argsort(-scores, kind="stable")]
        within, over = _capped(state, ranked, k, recommend, cap_categories=True)
        if len(within) >= k or (len(collaborative) < wanted and len(text) < wanted):
            break  # full within the caps, or every candidate there is was read
        wanted *= 4
    chosen = within + over[: k - len(within)]
    by_key = dict(zip(candidates, scores, strict=True))
    reasons = _because(state, chosen, history, weights, related, vectors, config.rating_midpoint)
    return [
        Recommended(state.items[key], float(by_key[key]), reason)
        for key, reason in zip(chosen, reasons, strict=True)
    ]


def _related(state: CatalogueState, keys: Sequence[str]) -> sp.csr_matrix:
    """(H, B) the co-interaction row of each history item (empty for items without one)."""
    behaviour = state.behaviour
    present = [
        (i, behaviour.position[key]) for i, key in enumerate(keys) if key in behaviour.position
    ]
    if not present or not behaviour.similarity.shape[0]:
        return sp.csr_matrix((len(keys), max(behaviour.similarity.shape[1], 1)), dtype=np.float32)
    selector = sp.csr_matrix(
        (
            np.ones(len(present), dtype=np.float32),
            ([i for i, _ in present], [p for _, p in present]),
        ),
        shape=(len(keys), behaviour.similarity.shape[0]),
    )
    return (selector @ behaviour.similarity).tocsr()


def _profile(
    state: CatalogueState, keys: Sequence[str], weights: np.ndarray
) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
    if state.index is None:
        return None, {}
    vectors = {key: v for key in keys if (v := state.index.vector(key)) is not None}
    if not vectors:
        return None, {}
    present = [i for i, key in enumerate(keys) if key in vectors]
    matrix = np.stack([vectors[keys[i]] for i in present])  # (P, D)
    history = UserHistory(np.arange(len(present)), [], [])
    return user_profile(matrix, history, weights[present]), vectors


def _because(
    state: CatalogueState,
    chosen: Sequence[str],
    history: list[tuple[str, EventType, float | None]],
    weights: np.ndarray,
    related: sp.csr_matrix,
    vectors: dict[str, np.ndarray],
    rating_midpoint: float,
) -> list[str]:
    """For each chosen item, the past event that most explains it: the event's weight x
    (co-interaction + text similarity) between its item and the chosen one; a rating below
    the scale's midpoint only where nothing else explains it ("because you rated" a film
    given 1 star reads as a mistake). An item the user had themselves (lists that keep seen
    items) is explained by their own heaviest event of it."""
    if not chosen:
        return []
    behaviour = state.behaviour
    explained = np.zeros((len(history), len(chosen)), dtype=np.float32)  # (H, K)
    columns = [
        (j, behaviour.position[key]) for j, key in enumerate(chosen) if key in behaviour.position
    ]
    if columns and related.nnz:
        explained[:, [j for j, _ in columns]] += related[:, [p for _, p in columns]].toarray()
    dim = state.index.dim if state.index is not None else 0
    past = np.stack([vectors.get(key, np.zeros(dim, np.float32)) for key, _, _ in history])
    ahead = [state.index.vector(key) if state.index is not None else None for key in chosen]
    present = [j for j, vector in enumerate(ahead) if vector is not None]
    if present and dim:
        explained[:, present] += past @ np.stack([ahead[j] for j in present]).T  # (H, K')
    disliked = np.array(
        [kind == EventType.RATING and value is not None and value < rating_midpoint
         for _, kind, value in history]
    )  # fmt: skip
    liked_weights = np.where(disliked, 0.0, weights)
    strength = weights[:, None] * explained
    liked = liked_weights[:, None] * explained
    best = np.where(liked.max(axis=0) > 0, np.argmax(liked, axis=0), np.argmax(strength, axis=0))
    for j, key in enumerate(chosen):  # its own events explain a seen item: "it" below
        own = [i for i, (past_key, _, _) in enumerate(history) if past_key == key]
        if own:
            best[j] = own[int(np.argmax(weights[own]))]
    return [
        _REASONS[history[i][1]].format("it") + " before"
        if history[i][0] == key
        else _REASONS[history[i][1]].format(state.items[history[i][0]].title)
        for i, key in zip(best, chosen, strict=True)
    ]


def _popular(
    state: CatalogueState,
    seen: set[str],
    k: int,
    filters: Filters,
    recommend: RecommendSettings,
) -> list[Recommended]:
    """The items most engaged with lately; where too few have events (a new shop, a quiet
    category), the newest items of the catalogue fill the list."""
    behaviour = state.behaviour
    ranked = []
    for p in behaviour.popular_order:  # most popular first; stop once the list can be filled
        if _allowed(state, behaviour.keys[p], filters, seen):
            ranked.append(behaviour.keys[p])
            if len(ranked) >= 4 * k:
                break
    popular = set(ranked)
    if len(ranked) < 4 * k:
        others = (i for i in state.items if i not in popular and _allowed(state, i, filters, seen))
        ranked += heapq.nlargest(
            4 * k - len(ranked), others, key=lambda i: state.items[i].created_at
        )
    chosen = _diversify(state, ranked, k, recommend, cap_categories=True)
    return [
        Recommended(state.items[key], float(behaviour.popular[behaviour.position[key]]),
                    "popular right now")
        if key in popular
        else Recommended(state.items[key], 0.0, "new in the catalogue")
        for key in chosen
    ]  # fmt: skip


def _not_served(session: Session, external_id: str, recommend: RecommendSettings) -> None:
    """Why an item is not among the served ones: stored moments ago, not yet read into the
    lists (`ItemNotEmbedded`, to try again), or no such active item (`UnknownItem`)."""
    active = session.scalar(select(Item.active).where(Item.external_id == external_id))
    if active:
        raise ItemNotEmbedded(
            f"item {external_id!r} was stored moments ago and is not in the lists yet: they "
            f"take new items up every {recommend.refresh_s:g} s; try again then"
        )
    raise UnknownItem(external_id)


def similar_items(
    state: CatalogueState,
    session: Session,
    external_id: str,
    k: int,
    filters: Filters,
    recommend: RecommendSettings,
) -> RecommendationList:
    """Items like this one: its nearest neighbours by text, blended with the items that the
    same users engage with. Text counts `similar_text_weight` here: a "more like this" list
    should mostly hold alternatives, with a few items that go with it."""
    config = dataclasses.replace(recommend.ranking(), text_weight=recommend.similar_text_weight)
    with state.lock:
        key = state.by_external.get(external_id)
    if key is None:
        _not_served(session, external_id, recommend)
    with state.lock:
        key = state.by_external.get(external_id)
        if key is None:  # retired in between
            raise UnknownItem(external_id)
        anchor = state.items[key]
        vector = state.index.vector(key) if state.index is not None else None
        if vector is None:
            raise ItemNotEmbedded(
                f"item {external_id!r} is not embedded yet: try again once the embedding job "
                "has run (GET /v1/jobs)"
            )
        exclude = {key} | filters.excluded(state)
        text = dict(state.index.search(vector, CANDIDATES, _mask(state, filters, exclude)))
        collaborative: dict[str, float] = {}
        behaviour = state.behaviour
        if key in behaviour.position:
            row = behaviour.similarity[behaviour.position[key]]
            collaborative = {
                behaviour.keys[p]: float(v) for p, v in zip(row.indices, row.data, strict=True)
            }
        candidates = [c for c in {**text, **collaborative} if _allowed(state, c, filters, exclude)]
        together = np.array([collaborative.get(c, 0.0) for c in candidates])
        alike = np.array([text[c] if c in text else _cosine(state, c, vector) for c in candidates])
        scores = blend(together, alike, config)
        # Which part put each candidate here: the scaled co-interaction or the weighted text.
        mostly_together = dict(
            zip(
                candidates,
                together / max(together.max(initial=0.0), 1e-12) > config.text_weight * alike,
                strict=True,
            )
        )
        ranked = [candidates[i] for i in np.argsort(-scores, kind="stable")]
        by_key = dict(zip(candidates, scores, strict=True))
        chosen = _diversify(state, ranked, k, recommend, allow_series=anchor.series)
        items = [
            Recommended(
                state.items[c],
                float(by_key[c]),
                f"often chosen with {anchor.title}"
                if mostly_together[c]
                else f"similar to {anchor.title}",
            )
            for c in chosen
        ]
    request = {"item_id": external_id, "k": k, "category": filters.category,
               "exclude": sorted(filters.exclude)}  # fmt: skip
    return _store(session, state, RecommendationKind.SIMILAR, items, "similar", request, None)


def search_items(
    state: CatalogueState,
    session: Session,
    query: str,
    query_vector: np.ndarray,
    k: int,
    filters: Filters,
    recommend: RecommendSettings,
    user_id: str | None = None,
) -> RecommendationList:
    """Items whose text is nearest to a free-text query (stored, like its explanations, with
    personal data masked)."""
    query = mask_personal_data(query)
    with state.lock:
        excluded = filters.excluded(state)
        found = (
            state.index.search(query_vector, CANDIDATES, _mask(state, filters, excluded))
            if state.index is not None
            else []
        )
        ranked = [key for key, _ in found if _allowed(state, key, filters, excluded)]
        scores = dict(found)
        chosen = _diversify(state, ranked, k, recommend)
        shown = query if len(query) <= 60 else query[:57] + "..."
        items = [
            Recommended(state.items[key], scores[key], f"matches \u201c{shown}\u201d")
            for key in chosen
        ]
    request = {"query": query, "k": k, "category": filters.category,
               "exclude": sorted(filters.exclude)}  # fmt: skip
    return _store(session, state, RecommendationKind.QUERY, items, "query", request, user_id)


def _mask(state: CatalogueState, filters: Filters, exclude: set[str]) -> np.ndarray | None:
    """(index size,) bool: active items of the category, minus `exclude`."""
    assert state.index is not None
    mask = state.index_active.copy()
    if filters.category is not None:
        code = state.categories.get(filters.category)
        mask &= state.index_category == (code if code is not None else -2)
    for key in exclude:
        position = state.index.position.get(key)
        if position is not None:
            mask[position] = False
    return mask


def _allowed(state: CatalogueState, key: str, filters: Filters, exclude: set[str]) -> bool:
    facts = state.items.get(key)
    return (
        facts is not None
        and facts.active
        and key not in exclude
        and (filters.category is None or facts.category == filters.category)
    )


def _cosine(state: CatalogueState, key: str, vector: np.ndarray | None) -> float:
    if vector is None or state.index is None:
        return 0.0
    found = state.index.vector(key)
    if found is None:
        return 0.0
    norm = float(np.linalg.norm(vector)) or 1.0
    return float(found @ vector) / norm


def _diversify(
    state: CatalogueState, ranked: Sequence[str], k: int, recommend: RecommendSettings, **caps: Any
) -> list[str]:
    """The first `k` of `ranked` within the caps (`_capped`, which `caps` go to); the caps are
    relaxed when the candidates cannot fill the list."""
    within, over = _capped(state, ranked, k, recommend, **caps)
    return within + over[: k - len(within)]


def _capped(
    state: CatalogueState,
    ranked: Sequence[str],
    k: int,
    recommend: RecommendSettings,
    allow_series: str | None = None,
    cap_categories: bool = False,
) -> tuple[list[str], list[str]]:
    """The first `k` of `ranked` with at most `max_per_series` per series (except the series
    of the anchor item, for "similar") and, for personal lists, at most `max_category_share`
    of `k` per category (a query or an item asks for one kind of thing; a user's profile should
    not be read as one); and, in order, those the caps left out."""
    # "At most half" of five is two: rounded down (the small term keeps 0.3 * 10 at 3).
    per_category = (
        max(1, math.floor(recommend.max_category_share * k + 1e-9)) if cap_categories else k
    )
    chosen: list[str] = []
    series: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    skipped: list[str] = []
    for key in ranked:
        if len(chosen) == k:
            break
        facts = state.items[key]
        too_many_series = (
            facts.series is not None
            and facts.series != allow_series
            and series[facts.series] >= recommend.max_per_series
        )
        too_many_category = (
            facts.category is not None and categories[facts.category] >= per_category
        )
        if too_many_series or too_many_category:
            skipped.append(key)
            continue
        chosen.append(key)
        if facts.series is not None:
            series[facts.series] += 1
        if facts.category is not None:
            categories[facts.category] += 1
    return chosen, skipped


def _store(
    session: Session,
    state: CatalogueState,
    kind: RecommendationKind,
    items: list[Recommended],
    strategy: str,
    request: dict[str, object],
    user_id: str | None,
) -> RecommendationList:
    record = Recommendation(
        id=uuid.uuid4(),
        kind=kind,
        user_id=user_id,
        request={**request, "strategy": strategy},
        items=[[r.facts.external_id, round(r.score, 6)] for r in items],
        encoder=state.encoder.key if state.encoder is not None else None,
    )
    session.add(record)
    if session.get_bind().dialect.name == "postgresql":
        # The served-list log need not wait for the disk: a crash may lose the last few
        # milliseconds of it, never a user's event or the catalogue.
        session.execute(sql("SET LOCAL synchronous_commit TO OFF"))
    session.commit()
    return RecommendationList(record.id, kind, items, strategy)
