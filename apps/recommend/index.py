"""The item vector index: exact for small catalogues, FAISS HNSW above a size threshold.

Vectors are L2-normalised, so inner product is cosine. Items are keyed by a string (the item's
id); re-embedding an item appends its new vector and retires the old position, and the index
compacts itself when retired positions pile up. Searches take an optional mask over positions
(active items, a category, not already seen): exact search applies it before ranking, HNSW
over-fetches and widens until enough allowed neighbours are found (falling back to exact
search over the allowed positions when a filter is very selective).

`save`/`load` persist the index (vectors, keys and the HNSW graph) so a restart does not rebuild
or re-embed anything.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ANN_THRESHOLD = 20_000
_MAX_OVERFETCH = 4096  # beyond this many neighbours, exact search over the mask is cheaper


@dataclass(frozen=True)
class IndexSettings:
    ann_threshold: int = ANN_THRESHOLD  # live items from which HNSW is used
    hnsw_m: int = 32  # graph degree
    ef_construction: int = 200
    ef_search: int = 128  # search breadth: higher is more exact and slower
    compact_at: float = 0.25  # rebuild when this share of positions is retired


class VectorIndex:
    """See the module docstring. Not thread-safe for writes: one writer, swap on update."""

    def __init__(self, dim: int, settings: IndexSettings | None = None) -> None:
        self.dim = dim
        self.settings = settings or IndexSettings()
        self.vectors = np.zeros((0, dim), dtype=np.float32)  # (N, D) every position
        self.keys: list[str] = []
        self.live = np.zeros(0, dtype=bool)  # (N,) False once a position is retired
        self.position: dict[str, int] = {}  # key -> its live position
        self._ann: Any = None  # faiss.IndexHNSWFlat over every position, or None (exact)
        self.generation = 0  # bumped when positions are renumbered (compaction)

    def __len__(self) -> int:
        return len(self.position)

    @property
    def size(self) -> int:
        """Positions, live and retired (the length of masks passed to `search`)."""
        return len(self.keys)

    @property
    def kind(self) -> str:
        return "hnsw" if self._ann is not None else "exact"

    def upsert(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Add items, or replace the vectors of items already in the index."""
        vectors = _normalised(np.asarray(vectors, dtype=np.float32).reshape(-1, self.dim))
        if len(keys) != len(vectors):
            raise ValueError(f"{len(keys)} keys for {len(vectors)} vectors")
        last: dict[str, int] = {}
        for i, key in enumerate(keys):  # a key given twice keeps its last vector
            last[key] = i
        keys = list(last)
        vectors = vectors[list(last.values())]
        for key in keys:
            old = self.position.get(key)
            if old is not None:
                self.live[old] = False
        start = len(self.keys)
        self.keys.extend(keys)
        self.vectors = np.concatenate([self.vectors, vectors])
        self.live = np.concatenate([self.live, np.ones(len(keys), dtype=bool)])
        self.position.update({key: start + i for i, key in enumerate(keys)})
        if self._ann is not None:
            self._ann.add(vectors)
        self._maintain()

    def remove(self, keys: Sequence[str]) -> None:
        for key in keys:
            old = self.position.pop(key, None)
            if old is not None:
                self.live[old] = False
        self._maintain()

    def vector(self, key: str) -> np.ndarray | None:
        found = self.position.get(key)
        return None if found is None else self.vectors[found]

    def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> list[tuple[str, float]]:
        """The `k` live items nearest to `query` (D,), best first, as (key, cosine).
        `allowed` (size,) bool limits the result to those positions."""
        mask = self.live if allowed is None else self.live & allowed
        query = _normalised(np.asarray(query, dtype=np.float32).reshape(1, self.dim))[0]
        if k <= 0 or not mask.any():
            return []
        if self._ann is None:
            return self._exact(query, k, mask)
        fetch = min(self.size, max(4 * k, 64))
        while True:
            scores, found = self._ann.search(query[None, :], fetch)  # (1, fetch) each
            hits = [
                (int(p), float(s))
                for p, s in zip(found[0], scores[0], strict=True)
                if p >= 0 and mask[p]
            ]
            if len(hits) >= k or fetch >= self.size:
                return [(self.keys[p], s) for p, s in hits[:k]]
            if fetch >= _MAX_OVERFETCH:
                return self._exact(query, k, mask)
            fetch = min(self.size, fetch * 4)

    def _exact(self, query: np.ndarray, k: int, mask: np.ndarray) -> list[tuple[str, float]]:
        scores = self.vectors @ query  # (N,) every position: cheaper than gathering the mask's
        scores[~mask] = -np.inf
        k = min(k, int(mask.sum()))
        best = np.argpartition(-scores, k - 1)[:k]
        best = best[np.argsort(-scores[best], kind="stable")]
        return [(self.keys[i], float(scores[i])) for i in best]

    def _maintain(self) -> None:
        retired = self.size - len(self.position)
        if self.size and retired / self.size > self.settings.compact_at:
            self._compact()
        if self._ann is None and len(self.position) >= self.settings.ann_threshold:
            self._build_ann()
        elif self._ann is not None and len(self.position) < self.settings.ann_threshold // 2:
            self._ann = None  # small again: exact search is both exact and fast

    def _compact(self) -> None:
        keep = np.flatnonzero(self.live)
        self.vectors = self.vectors[keep]
        self.keys = [self.keys[i] for i in keep]
        self.live = np.ones(len(keep), dtype=bool)
        self.position = {key: i for i, key in enumerate(self.keys)}
        self.generation += 1
        if self._ann is not None:
            self._build_ann()

    def _build_ann(self) -> None:
        import faiss  # imported here: small catalogues never need it

        ann = faiss.IndexHNSWFlat(self.dim, self.settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        ann.hnsw.efConstruction = self.settings.ef_construction
        ann.hnsw.efSearch = self.settings.ef_search
        ann.add(self.vectors)
        self._ann = ann

    def save(self, folder: Path) -> None:
        """Write the index to `folder` (built beside it and renamed into place)."""
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        scratch = folder.with_name(f".{folder.name}-{uuid.uuid4().hex}")
        scratch.mkdir()
        np.save(scratch / "vectors.npy", self.vectors)
        np.save(scratch / "live.npy", self.live)
        (scratch / "keys.json").write_text(json.dumps(self.keys))
        meta = {"dim": self.dim, "kind": self.kind, "settings": self.settings.__dict__}
        (scratch / "meta.json").write_text(json.dumps(meta))
        if self._ann is not None:
            import faiss

            faiss.write_index(self._ann, str(scratch / "hnsw.faiss"))
        retired = folder.with_name(f".{folder.name}-old-{uuid.uuid4().hex}")
        if folder.exists():
            folder.rename(retired)
        scratch.rename(folder)
        shutil.rmtree(retired, ignore_errors=True)

    @classmethod
    def load(cls, folder: Path) -> VectorIndex:
        folder = Path(folder)
        try:
            meta = json.loads((folder / "meta.json").read_text())
            index = cls(int(meta["dim"]), IndexSettings(**meta["settings"]))
            index.vectors = np.load(folder / "vectors.npy")
            index.live = np.load(folder / "live.npy")
            index.keys = json.loads((folder / "keys.json").read_text())
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise IndexLoadError(f"cannot load the item index from {folder}: {exc}") from exc
        if not len(index.keys) == len(index.live) == len(index.vectors):
            raise IndexLoadError(f"the item index in {folder} is inconsistent; rebuild it")
        index.position = {key: i for i, key in enumerate(index.keys) if index.live[i]}
        if meta["kind"] == "hnsw":
            import faiss

            index._ann = faiss.read_index(str(folder / "hnsw.faiss"))
            index._ann.hnsw.efSearch = index.settings.ef_search
        return index


class IndexLoadError(RuntimeError):
    """A saved index could not be read (it is rebuilt from the stored embeddings)."""


def _normalised(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
