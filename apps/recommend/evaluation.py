"""Offline evaluation: leave-last-out on MovieLens-100k, ranking over the full catalogue.

Each user's last rating (by time) is the test item; every earlier rating is training data.
Each model ranks every movie except the user's training items, and a hit is the test item in
the top 10: HR@10 (= Recall@10 with one relevant item) and NDCG@10 = 1 / log2(rank + 1).
The models, all in the same run:

- popularity: training ratings per movie;
- item-kNN: the sum of co-interaction cosines to the user's training movies (unweighted);
- text: cosine to the user's profile of movie-text embeddings (title, year, genres);
- blended: the product's model (`apps.recommend.ranking`): recency- and type-weighted
  co-interaction plus text.

Cold users: MovieLens users all have 20+ ratings, so users with fewer than 5 training
interactions are made by keeping only each user's last n (1..4) training ratings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from apps.recommend.ranking import (
    RankingConfig,
    UserHistory,
    blend,
    co_interaction_similarity,
    collaborative_scores,
    event_weights,
    popularity,
    user_profile,
)

MOVIELENS_FOLDER = "movielens-100k"
MODELS = ("popularity", "item-knn", "text", "blended")


@dataclass(frozen=True)
class MovieLens:
    """Movies as texts, and each user's ratings in time order (positions into `texts`)."""

    texts: list[str]
    histories: dict[int, UserHistory]  # user id -> training ratings, oldest first
    targets: dict[int, int]  # user id -> position of the held-out last movie

    def training_events(self, midpoint: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
        """(users, positions) of the training ratings, dislikes (under `midpoint`) left out,
        as the served recommender leaves them out of co-interactions and popularity."""
        liked = [
            (u, p)
            for u, h in self.histories.items()
            for p, value in zip(h.positions, h.values, strict=True)
            if value is None or value >= midpoint
        ]
        return np.array([u for u, _ in liked]), np.array([p for _, p in liked], dtype=np.int64)

    def truncated(self, keep: int) -> MovieLens:
        """Every user reduced to their `keep` most recent training ratings."""
        return MovieLens(
            self.texts, {u: h.recent(keep) for u, h in self.histories.items()}, self.targets
        )


def movie_text(title: str, genres: Iterable[str]) -> str:
    """`Toy Story (1995). Genres: Animation, Children's, Comedy.`"""
    return f"{title}. Genres: {', '.join(genres)}."


def load_movielens(data_dir: Path) -> MovieLens:
    folder = Path(data_dir) / MOVIELENS_FOLDER
    if not (folder / "u.data").exists():
        raise FileNotFoundError(
            f"{folder / 'u.data'} not found: set TEXTSUITE_DATA_DIR to the folder holding "
            f"{MOVIELENS_FOLDER}/ (see ../shared/data/README.md)"
        )
    genre_names = [
        line.split("|")[0]
        for line in (folder / "u.genre").read_text(encoding="latin-1").splitlines()
        if line.strip()
    ]
    texts, position = [], {}
    for line in (folder / "u.item").read_text(encoding="latin-1").splitlines():
        fields = line.split("|")
        flags = fields[5 : 5 + len(genre_names)]
        position[int(fields[0])] = len(texts)
        texts.append(
            movie_text(fields[1], (g for g, f in zip(genre_names, flags, strict=True) if f == "1"))
        )
    ratings = np.loadtxt(folder / "u.data", dtype=np.int64)  # (N, 4) user, item, rating, time
    ratings = ratings[np.lexsort((ratings[:, 1], ratings[:, 3], ratings[:, 0]))]
    histories, targets = {}, {}
    for user in np.unique(ratings[:, 0]):
        rows = ratings[ratings[:, 0] == user]
        movies = np.array([position[m] for m in rows[:, 1]])
        histories[int(user)] = UserHistory(
            movies[:-1], ["rating"] * (len(rows) - 1), [float(r) for r in rows[:-1, 2]]
        )
        targets[int(user)] = int(movies[-1])
    return MovieLens(texts, histories, targets)


@dataclass(frozen=True)
class RankingQuality:
    model: str
    hit_rate: float  # HR@k = Recall@k with one held-out item
    ndcg: float
    users: int


Scorer = Callable[[UserHistory], np.ndarray]  # (I,) scores for every movie


def leave_last_out(data: MovieLens, scorer: Scorer, model: str, k: int = 10) -> RankingQuality:
    hits = gain = 0.0
    for user, history in data.histories.items():
        scores = scorer(history).astype(np.float64)
        scores[history.positions] = -np.inf  # the user's training items are not candidates
        target = data.targets[user]
        # 0 = first; ties rank the target last among them (a model that scores every movie
        # alike has found nothing, and must not be credited with a hit)
        rank = int((scores >= scores[target]).sum()) - 1
        if rank < k:
            hits += 1
            gain += 1.0 / np.log2(rank + 2)
    n = len(data.histories)
    return RankingQuality(model, hits / n, gain / n, n)


def scorers(data: MovieLens, embeddings: np.ndarray, config: RankingConfig) -> dict[str, Scorer]:
    """The four models, fitted on `data`'s training ratings. `embeddings` (I, D) normalised."""
    users, positions = data.training_events(config.rating_midpoint)
    n_items = len(data.texts)
    similarity = co_interaction_similarity(users, positions, n_items, config.neighbours)
    counts = popularity(users, positions, np.zeros(len(positions)), n_items)
    unweighted = RankingConfig(
        half_life_events=1e9, neighbours=config.neighbours, type_weights={"rating": 3.0}
    )

    def item_knn(history: UserHistory) -> np.ndarray:
        plain = UserHistory(history.positions, history.types, [3.0] * len(history))
        return collaborative_scores(similarity, plain, event_weights(plain, unweighted))

    def text(history: UserHistory) -> np.ndarray:
        weights = event_weights(history, config)
        if not weights.any():  # only dislikes: the served list is the popular one
            return counts
        return embeddings @ user_profile(embeddings, history, weights)

    def blended(history: UserHistory) -> np.ndarray:
        weights = event_weights(history, config)
        if not weights.any():
            return counts
        collaborative = collaborative_scores(similarity, history, weights)
        return blend(collaborative, embeddings @ user_profile(embeddings, history, weights), config)

    return {
        "popularity": lambda _history: counts,
        "item-knn": item_knn,
        "text": text,
        "blended": blended,
    }


def evaluate(
    data: MovieLens,
    embeddings: np.ndarray,
    config: RankingConfig | None = None,
    *,
    k: int = 10,
    models: Iterable[str] = MODELS,
    keep_last: int | None = None,
) -> list[RankingQuality]:
    """Each model's quality. The models learn from every training rating; with `keep_last`,
    each user is then ranked from their last `keep_last` ratings only (a cold user)."""
    config = config or RankingConfig()
    available = scorers(data, embeddings, config)
    unknown = sorted(set(models) - set(available))
    if unknown:
        raise ValueError(f"unknown models {unknown}; expected some of {', '.join(MODELS)}")
    ranked = data if keep_last is None else data.truncated(keep_last)
    return [leave_last_out(ranked, available[name], name, k) for name in models]
