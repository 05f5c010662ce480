"""How items are scored for a user: the blended model and its two signals (pure numpy, no I/O).

- Collaborative: item-item cosine over co-interactions (two items are close when the same users
  engage with both), the `neighbours` strongest kept per item.
- Text: cosine between an item's embedding and the user's profile, the weighted mean of the
  embeddings of the items the user engaged with.

Both weigh a user's events by type (a purchase says more than a view) and by recency (the most
recent events count most: weight halves every `half_life_events` events back), so a profile
follows what the user is looking for now. The blend is the collaborative score scaled to the
user's strongest candidate plus `text_weight` times the text score; with no history on an item
(new items, cold catalogues) the text score alone ranks it. The same functions rank the full
catalogue offline (`apps.recommend.evaluation`) and a candidate set online.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

DEFAULT_TYPE_WEIGHTS: Mapping[str, float] = {
    "view": 1.0,
    "click": 1.5,
    "cart": 2.5,
    "purchase": 3.0,
    "rating": 1.0,  # scaled by the rating value, see `event_weights`
}


@dataclass(frozen=True)
class RankingConfig:
    """The blended model's settings. Defaults chosen on MovieLens-100k with each user's
    second-to-last rating held out (the last one is the benchmark's test item)."""

    half_life_events: float = 2.0
    text_weight: float = 2.0
    neighbours: int = 50  # co-interaction neighbours kept per item
    history: int = 50  # a user's most recent events that make the profile
    type_weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_TYPE_WEIGHTS))
    rating_midpoint: float = 3.0  # a rating of this value weighs as much as a view

    def __post_init__(self) -> None:
        if self.half_life_events <= 0:
            raise ValueError(f"half_life_events must be > 0, got {self.half_life_events}")
        if self.text_weight < 0:
            raise ValueError(f"text_weight must be >= 0, got {self.text_weight}")
        if self.neighbours < 1 or self.history < 1:
            raise ValueError("neighbours and history must be >= 1")
        if self.rating_midpoint <= 0:
            raise ValueError(f"rating_midpoint must be > 0, got {self.rating_midpoint}")


@dataclass(frozen=True)
class UserHistory:
    """A user's events, oldest first: catalogue positions, event types and values."""

    positions: np.ndarray  # (H,) int
    types: Sequence[str]
    values: Sequence[float | None]

    def __len__(self) -> int:
        return len(self.positions)

    def recent(self, n: int) -> UserHistory:
        return UserHistory(self.positions[-n:], self.types[-n:], self.values[-n:])


def event_weights(history: UserHistory, config: RankingConfig) -> np.ndarray:
    """(H,) weight of each event: its type's weight (a rating's scaled by value / the scale's
    midpoint: on 1-5 a 5 counts 1.7 and a 3 counts 1; one under the midpoint, a dislike, counts
    0) times 0.5 ** (events since it / half life)."""
    n = len(history)
    by_type = np.array(
        [
            config.type_weights.get(kind, 1.0) * _rating_factor(kind, value, config)
            for kind, value in zip(history.types, history.values, strict=True)
        ]
    )
    age = np.arange(n - 1, -1, -1, dtype=np.float64)  # (H,) 0 for the most recent event
    return by_type * 0.5 ** (age / config.half_life_events)


def _rating_factor(kind: str, value: float | None, config: RankingConfig) -> float:
    if kind != "rating" or value is None:
        return 1.0
    if value < config.rating_midpoint:
        return 0.0  # a film rated 1 star says what not to recommend, not what to
    return float(value) / config.rating_midpoint


def co_interaction_similarity(
    user_ids: np.ndarray, positions: np.ndarray, n_items: int, neighbours: int
) -> sp.csr_matrix:
    """(I, I) item-item cosine over which users engaged with each item (each user-item pair
    counted once), the diagonal removed and only each row's `neighbours` largest kept."""
    if len(positions) == 0:
        return sp.csr_matrix((n_items, n_items), dtype=np.float32)
    _, users = np.unique(user_ids, return_inverse=True)
    engaged = sp.csr_matrix(
        (np.ones(len(positions), dtype=np.float32), (users, positions)),
        shape=(users.max() + 1, n_items),
    )
    engaged.data[:] = 1.0  # duplicates were summed: one user-item pair counts once
    counts = np.asarray(engaged.sum(axis=0)).ravel()  # (I,) users per item
    norms = np.sqrt(np.maximum(counts, 1.0))
    co = (engaged.T @ engaged).tocsr()  # (I, I) users in common
    co.setdiag(0.0)
    co.eliminate_zeros()
    co = sp.diags(1.0 / norms) @ co @ sp.diags(1.0 / norms)
    return _top_per_row(co.tocsr().astype(np.float32), neighbours)


def _top_per_row(matrix: sp.csr_matrix, k: int) -> sp.csr_matrix:
    rows, cols, vals = [], [], []
    for row in range(matrix.shape[0]):
        start, end = matrix.indptr[row], matrix.indptr[row + 1]
        if start == end:
            continue
        data, index = matrix.data[start:end], matrix.indices[start:end]
        if end - start > k:
            keep = np.argpartition(-data, k - 1)[:k]
            data, index = data[keep], index[keep]
        rows.append(np.full(len(index), row))
        cols.append(index)
        vals.append(data)
    if not rows:
        return sp.csr_matrix(matrix.shape, dtype=np.float32)
    return sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=matrix.shape
    )


def collaborative_scores(
    similarity: sp.csr_matrix, history: UserHistory, weights: np.ndarray
) -> np.ndarray:
    """(I,) sum over the user's events of weight x similarity of each item to the event's."""
    if len(history) == 0:
        return np.zeros(similarity.shape[0], dtype=np.float32)
    rows = similarity[history.positions]  # (H, I) sparse
    return np.asarray(rows.T @ weights, dtype=np.float32).ravel()


def user_profile(embeddings: np.ndarray, history: UserHistory, weights: np.ndarray) -> np.ndarray:
    """(D,) weighted mean of the embeddings of the user's items (zeros without history)."""
    if len(history) == 0 or weights.sum() <= 0:
        return np.zeros(embeddings.shape[1], dtype=np.float32)
    return (weights @ embeddings[history.positions] / weights.sum()).astype(np.float32)


def blend(collaborative: np.ndarray, text: np.ndarray, config: RankingConfig) -> np.ndarray:
    """Collaborative scores scaled so the strongest candidate has 1, plus text_weight x text."""
    top = float(collaborative.max()) if collaborative.size else 0.0
    scaled = collaborative / top if top > 0 else collaborative
    return scaled + config.text_weight * text


def popularity(
    user_ids: np.ndarray,
    positions: np.ndarray,
    ages_s: np.ndarray,
    n_items: int,
    half_life_s: float | None = None,
) -> np.ndarray:
    """(I,) how popular each item is: the users who engaged with it (one user's 30 views count
    once, at the newest), each decayed by 0.5 ** (age / half life) when one is given (popular
    *recently*)."""
    if len(positions) == 0:
        return np.zeros(n_items, dtype=np.float32)
    _, users = np.unique(user_ids, return_inverse=True)
    newest_first = np.lexsort((ages_s, positions, users))  # by user, item, then age
    pairs = np.stack([users[newest_first], positions[newest_first]], axis=1)
    first = np.ones(len(pairs), dtype=bool)
    first[1:] = np.any(pairs[1:] != pairs[:-1], axis=1)
    kept, ages = positions[newest_first][first], ages_s[newest_first][first]
    weights = np.ones(len(kept)) if half_life_s is None else 0.5 ** (ages / half_life_s)
    return np.bincount(kept, weights=weights, minlength=n_items).astype(np.float32)


def top_k(scores: np.ndarray, k: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """Positions of the `k` highest scores, best first, never one in `exclude`."""
    scores = scores.astype(np.float64, copy=True)
    if exclude is not None and len(exclude):
        scores[exclude] = -np.inf
    k = min(k, int(np.isfinite(scores).sum()))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    best = np.argpartition(-scores, k - 1)[:k]
    return best[np.argsort(-scores[best], kind="stable")]
