"""The vector index: exact and HNSW search, masks, updates, compaction, save and load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from apps.recommend.index import IndexLoadError, IndexSettings, VectorIndex


def random_vectors(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def keys(n: int, start: int = 0) -> list[str]:
    return [f"i{j}" for j in range(start, start + n)]


def test_exact_search_ranks_by_cosine_and_honours_the_mask() -> None:
    index = VectorIndex(2)
    index.upsert(["a", "b", "c"], np.array([[1, 0], [0.8, 0.6], [0, 1]], dtype=np.float32))
    assert [key for key, _ in index.search(np.array([1.0, 0.1]), 2)] == ["a", "b"]
    hits = index.search(np.array([1.0, 0.0]), 3, allowed=np.array([False, True, True]))
    assert [key for key, _ in hits] == ["b", "c"] and hits[0][1] == pytest.approx(0.8)
    assert index.kind == "exact" and len(index) == 3


def test_replacing_and_removing_items_retires_their_old_positions() -> None:
    index = VectorIndex(2, IndexSettings(compact_at=0.9))
    index.upsert(["a", "b"], np.array([[1, 0], [0, 1]], dtype=np.float32))
    index.upsert(["a"], np.array([[0, 1]], dtype=np.float32))
    assert index.size == 3 and len(index) == 2
    assert index.vector("a").tolist() == [0.0, 1.0]
    assert {key for key, _ in index.search(np.array([0.0, 1.0]), 5)} == {"a", "b"}
    index.remove(["b"])
    assert [key for key, _ in index.search(np.array([0.0, 1.0]), 5)] == ["a"]
    index.settings = IndexSettings(compact_at=0.1)
    index.remove(["missing"])  # nothing to remove; compaction runs
    assert index.size == 1 and index.keys == ["a"]


def test_hnsw_above_the_threshold_finds_what_exact_search_finds() -> None:
    vectors = random_vectors(2000)
    index = VectorIndex(32, IndexSettings(ann_threshold=1000))
    index.upsert(keys(2000), vectors)
    assert index.kind == "hnsw"
    exact = VectorIndex(32, IndexSettings(ann_threshold=10**9))
    exact.upsert(keys(2000), vectors)
    queries = random_vectors(50, seed=1)
    recall = np.mean(
        [
            len({k for k, _ in index.search(q, 10)} & {k for k, _ in exact.search(q, 10)}) / 10
            for q in queries
        ]
    )
    assert recall >= 0.95
    # A selective mask still fills the list, from allowed positions only.
    allowed = np.zeros(index.size, dtype=bool)
    allowed[::97] = True
    hits = index.search(queries[0], 10, allowed)
    assert len(hits) == 10 and all(int(k[1:]) % 97 == 0 for k, _ in hits)


@pytest.mark.parametrize("threshold", [10**9, 100])
def test_save_and_load_round_trip(tmp_path: Path, threshold: int) -> None:
    index = VectorIndex(32, IndexSettings(ann_threshold=threshold, compact_at=0.9))
    index.upsert(keys(300), random_vectors(300))
    index.upsert(["i0"], random_vectors(1, seed=5))
    index.save(tmp_path / "index")
    loaded = VectorIndex.load(tmp_path / "index")
    assert loaded.kind == index.kind and loaded.size == 301 and len(loaded) == 300
    query = random_vectors(1, seed=9)[0]
    assert loaded.search(query, 5) == index.search(query, 5)
    loaded.upsert(keys(5, start=300), random_vectors(5, seed=3))  # still takes updates
    assert len(loaded) == 305
    index.save(tmp_path / "index")  # saving over an older copy replaces it
    assert len(VectorIndex.load(tmp_path / "index")) == 300


def test_a_damaged_index_is_reported(tmp_path: Path) -> None:
    index = VectorIndex(4)
    index.upsert(["a"], np.ones((1, 4), dtype=np.float32))
    index.save(tmp_path / "index")
    (tmp_path / "index" / "keys.json").write_text("[")
    with pytest.raises(IndexLoadError, match="cannot load the item index"):
        VectorIndex.load(tmp_path / "index")
