"""Synthetic catalogues at scale, with the structure of real item embeddings.

Real MiniLM vectors (the demo shop, MovieLens titles, Banking77 sentences) are the seeds; each
synthetic item is a seed plus a little noise, renormalised, so items come in families of near
neighbours as product variants do — uniform random vectors in 384 dimensions have no
neighbourhood structure and say nothing about an ANN index on real data. Events follow a
power-law popularity within the families a user likes.
"""

from __future__ import annotations

import numpy as np

from bench.common import REPO_ROOT, data_dir

NOISE = 0.03  # per dimension: a variant sits at cosine ~0.75 from its seed


def seed_vectors() -> np.ndarray:
    """(S, 384) MiniLM embeddings of real texts available offline."""
    from apps.recommend.catalogue import ItemIn, text_of
    from apps.recommend.demo.sessions import load_catalogue
    from apps.recommend.evaluation import load_movielens
    from core.ml.device import choose_placement
    from core.ml.loading import load_encoder
    from core.ml.packaged import minilm_folder

    texts = [text_of(ItemIn.model_validate(item)) for item in load_catalogue()]
    texts += load_movielens(data_dir()).texts
    banking = data_dir() / "banking77" / "train.csv"
    if banking.exists():
        from core.ml.training import LabelledTexts

        texts += LabelledTexts.from_csv(banking, "text", "category").texts
    encoder = load_encoder(minilm_folder(REPO_ROOT / "var" / "models"), choose_placement())
    return encoder.encode(texts)


def variants(seeds: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(n, D) unit vectors near randomly chosen seeds, and each one's seed index (n,)."""
    family = rng.integers(0, len(seeds), n)
    vectors = np.empty((n, seeds.shape[1]), dtype=np.float32)
    for start in range(0, n, 100_000):  # in chunks: flat memory at a million items
        end = min(start + 100_000, n)
        chunk = seeds[family[start:end]] + NOISE * rng.standard_normal(
            (end - start, seeds.shape[1]), dtype=np.float32
        )
        vectors[start:end] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    return vectors, family


def queries(seeds: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    vectors, _ = variants(seeds, n, rng)
    return vectors


def user_events(family: np.ndarray, users: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """(user, item) pairs: each user likes a few families and engages with 3-40 of their items,
    popular items more."""
    members: dict[int, np.ndarray] = {}
    order = np.argsort(family, kind="stable")
    bounds = np.searchsorted(family[order], np.arange(family.max() + 2))
    families = [f for f in range(family.max() + 1) if bounds[f + 1] > bounds[f]]
    events = []
    for user in range(users):
        liked = rng.choice(families, size=rng.integers(1, 4))
        for _ in range(rng.integers(3, 41)):
            f = int(rng.choice(liked))
            if f not in members:
                members[f] = order[bounds[f] : bounds[f + 1]]
            pool = members[f]
            rank = min(int(rng.zipf(1.5)) - 1, len(pool) - 1)
            events.append((user, int(pool[rank])))
    return events
