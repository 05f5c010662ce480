"""What the service ranks from, in memory: item facts, the vector index and behaviour.

`CatalogueState.refresh` picks up what changed in the database since the last call — items
(active flag, category, series, title) and new embeddings from the current encoder — and adds
them to the index, so a new item is recommendable as soon as its embedding is stored.
`refresh_behaviour` recomputes co-interactions and recent popularity from the event table.
The index is saved under the artifacts folder after each change and loaded at start-up, so a
restart re-reads only the embeddings stored after the save.

Readers take `lock` for the length of one request; a refresh builds what it can outside it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sqlalchemy import Row, Select, func, select
from sqlalchemy.orm import Session, sessionmaker

from apps.recommend.embeddings import EncoderChoice, as_vector, choose_encoder
from apps.recommend.index import IndexLoadError, IndexSettings, VectorIndex
from apps.recommend.models import EventType, Interaction, Item, ItemEmbedding
from apps.recommend.ranking import co_interaction_similarity, popularity
from apps.recommend.settings import RecommendSettings
from core.settings import Settings
from core.storage.base import utcnow
from core.storage.engine import in_slices

log = logging.getLogger(__name__)

# A row's timestamp is taken before its transaction commits, so a refresh may miss rows
# stamped shortly before it started; the next refresh looks back this far before the previous
# one's start (longer than any write transaction), and no further.
_OVERLAP = dt.timedelta(seconds=30)


@dataclass(frozen=True)
class ItemFacts:
    key: str  # the item's id as a string (the index key)
    external_id: str
    title: str
    category: str | None
    series: str | None
    active: bool
    created_at: dt.datetime  # new items fill lists that popularity cannot


@dataclass
class Behaviour:
    """Co-interaction similarity and recent popularity over the items that have events."""

    keys: list[str] = field(default_factory=list)  # behaviour position -> item key
    position: dict[str, int] = field(default_factory=dict)
    similarity: sp.csr_matrix = field(default_factory=lambda: sp.csr_matrix((0, 0)))
    popular: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    popular_order: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    events: int = 0


def compute_behaviour(database_url: str, recommend: RecommendSettings) -> Behaviour:
    """`read_behaviour` from a database URL: what a separate process runs, so that the
    minutes of CPU a large event table costs never hold the serving process's GIL."""
    from core.storage.engine import get_session_factory

    with get_session_factory(database_url)() as session:
        return read_behaviour(session, recommend)


def read_behaviour(session: Session, recommend: RecommendSettings) -> Behaviour:
    """Co-interactions and popularity from the last `recommend.behaviour_days` of events,
    counted back from the newest event (now, in a shop with traffic): a history imported
    from the past, with nothing since, still makes the signal. A rating under the scale's
    midpoint is a dislike: it makes neither."""
    newest = session.scalar(select(func.max(Interaction.occurred_at)))
    now = min(utcnow(), newest) if newest is not None else utcnow()
    since = now - dt.timedelta(days=recommend.behaviour_days)
    disliked = (Interaction.type == EventType.RATING) & (
        Interaction.value < recommend.ratings().midpoint
    )
    rows = _chunked(
        session,
        select(Interaction.user_id, Interaction.item_id, Interaction.occurred_at).where(
            Interaction.occurred_at >= since, ~disliked
        ),
    )
    keys = sorted({str(item_id) for _, item_id, _ in rows})
    position = {key: i for i, key in enumerate(keys)}
    users = np.array([user for user, _, _ in rows], dtype=object)
    positions = np.array([position[str(item_id)] for _, item_id, _ in rows], dtype=np.int64)
    ages = np.array([(now - at).total_seconds() for _, _, at in rows], dtype=np.float64)
    popular = popularity(
        users, positions, ages, len(keys), recommend.popular_half_life_days * 86400
    )
    return Behaviour(
        keys=keys,
        position=position,
        similarity=co_interaction_similarity(users, positions, len(keys), recommend.neighbours),
        popular=popular,
        popular_order=np.argsort(-popular, kind="stable"),
        events=len(rows),
    )


def _chunked(session: Session, query: Select, chunk: int = 500) -> list[Row]:
    """All rows of `query`, fetched `chunk` at a time: one fetch of a large result converts
    every row in a single call that holds the GIL, and requests served meanwhile stall."""
    rows: list[Row] = []
    for part in session.execute(query.execution_options(yield_per=chunk)).partitions():
        rows.extend(part)
    return rows


class CatalogueState:
    """See the module docstring."""

    def __init__(
        self,
        settings: Settings,
        recommend: RecommendSettings,
        factory: sessionmaker[Session],
    ) -> None:
        self.settings, self.recommend, self.factory = settings, recommend, factory
        self.lock = threading.RLock()
        self._refreshing = threading.Lock()  # one refresh at a time (the loop, a test, the CLI)
        self.encoder: EncoderChoice | None = None
        self.index: VectorIndex | None = None
        self.items: dict[str, ItemFacts] = {}
        self.by_external: dict[str, str] = {}
        self.behaviour = Behaviour()
        # Aligned with index positions, for search masks.
        self.index_active = np.zeros(0, dtype=bool)
        self.index_category = np.zeros(0, dtype=np.int32)
        self.categories: dict[str, int] = {}
        self._hashes: dict[str, str] = {}  # item key -> text hash of its indexed vector
        # Rows stamped before these times have been read (None: read everything).
        self._items_settled: dt.datetime | None = None
        self._vectors_settled: dt.datetime | None = None

    # -- refresh ----------------------------------------------------------------------------

    def refresh(self) -> bool:
        """Bring items and the index up to date; True when anything changed."""
        with self._refreshing:
            return self._refresh()

    def _refresh(self) -> bool:
        started = utcnow()
        choice = choose_encoder(self.settings, self.recommend, self.factory)
        if self.encoder is None or (
            choice.key != self.encoder.key and self._covers_catalogue(choice)
        ):
            self._switch_encoder(choice)
        with self.factory() as session:
            changed_items = self._load_items(session)
            new_vectors = self._load_vectors(session)
        self._items_settled = self._vectors_settled = started - _OVERLAP
        if not changed_items and not new_vectors:
            return False
        with self.lock:
            self.items.update(changed_items)
            self.by_external.update({f.external_id: k for k, f in changed_items.items()})
            before = (self.index.size, self.index.generation) if self.index else (0, -1)
            if new_vectors:
                keys = list(new_vectors)
                vectors = np.stack([new_vectors[k][0] for k in keys])
                if self.index is None:
                    self.index = VectorIndex(vectors.shape[1], self._index_settings())
                self.index.upsert(keys, vectors)
                self._hashes.update({k: new_vectors[k][1] for k in keys})
            if self.index is not None and before[1] == self.index.generation:
                self._update_masks(before[0], changed_items)  # appended and changed only
            else:
                self._align_masks()  # a new or compacted index: every position
        if new_vectors:
            self._save_index()
        return True

    def refresh_behaviour(self) -> None:
        """Recompute co-interactions and popularity from the last `behaviour_days` of events,
        in this process (the service runs `compute_behaviour` in a process of its own)."""
        with self.factory() as session:
            self.set_behaviour(read_behaviour(session, self.recommend))

    def set_behaviour(self, behaviour: Behaviour) -> None:
        with self.lock:
            self.behaviour = behaviour

    # -- loading ----------------------------------------------------------------------------

    def _covers_catalogue(self, choice: EncoderChoice) -> bool:
        """Whether `choice` has embedded every item (a newly promoted encoder takes over only
        then; until that, the previous one's vectors keep serving)."""
        with self.factory() as session:
            items = session.scalar(select(func.count(Item.id))) or 0
            embedded = session.scalar(
                select(func.count(ItemEmbedding.item_id)).where(ItemEmbedding.encoder == choice.key)
            )
        return (embedded or 0) >= items

    def _switch_encoder(self, choice: EncoderChoice) -> None:
        """A new encoder: start from its saved index, or an empty one, and reload vectors."""
        index: VectorIndex | None = None
        folder = self._index_folder(choice)
        settled = None
        if (folder / "meta.json").exists():
            try:
                index = VectorIndex.load(folder)
                saved = json.loads((folder / "state.json").read_text())
                settled = dt.datetime.fromisoformat(saved["vectors_settled"])
                hashes = saved["hashes"]
            except (IndexLoadError, OSError, ValueError, KeyError) as exc:
                log.warning("rebuilding the item index: %s", exc)
                index, settled, hashes = None, None, {}
        else:
            hashes = {}
        with self.lock:
            self.encoder, self.index = choice, index
            self._hashes = hashes if index is not None else {}
            self._vectors_settled = settled
            self._align_masks()
        log.info("item encoder %s (%d items in the saved index)", choice.key, len(index or ()))

    def _load_items(self, session: Session) -> dict[str, ItemFacts]:
        query = select(Item.id, Item.external_id, Item.title, Item.category, Item.series)
        query = query.add_columns(Item.active, Item.created_at)
        if self._items_settled is not None:
            query = query.where(Item.updated_at >= self._items_settled)
        rows = _chunked(session, query)
        changed = {}
        for row in rows:
            facts = ItemFacts(
                str(row.id),
                row.external_id,
                row.title,
                row.category,
                row.series,
                row.active,
                row.created_at,
            )
            if self.items.get(facts.key) != facts:
                changed[facts.key] = facts
        return changed

    def _load_vectors(self, session: Session) -> dict[str, tuple[np.ndarray, str]]:
        """Vectors of the current encoder stored since the last refresh, for items whose
        indexed text differs. After the first load, hashes are read first and vectors only for
        the items that need them, so a refresh after a bulk write does not re-read it."""
        assert self.encoder is not None
        ours = ItemEmbedding.encoder == self.encoder.key
        if self._vectors_settled is None:
            rows = _chunked(
                session,
                select(ItemEmbedding.item_id, ItemEmbedding.vector, ItemEmbedding.text_hash).where(
                    ours
                ),
            )
            return {
                str(item_id): (as_vector(blob), digest)
                for item_id, blob, digest in rows
                if self._hashes.get(str(item_id)) != digest
            }
        recent = _chunked(
            session,
            select(ItemEmbedding.item_id, ItemEmbedding.text_hash).where(
                ours, ItemEmbedding.created_at >= self._vectors_settled
            ),
        )
        wanted = [item_id for item_id, digest in recent if self._hashes.get(str(item_id)) != digest]
        fresh: dict[str, tuple[np.ndarray, str]] = {}
        for chunk in in_slices(wanted, 1000):
            rows = session.execute(
                select(ItemEmbedding.item_id, ItemEmbedding.vector, ItemEmbedding.text_hash).where(
                    ours, ItemEmbedding.item_id.in_(chunk)
                )
            )
            fresh.update({str(i): (as_vector(blob), digest) for i, blob, digest in rows})
        return fresh

    def _update_masks(self, old_size: int, changed: dict[str, ItemFacts]) -> None:
        """Extend the masks over positions appended since `old_size`, and update the
        positions of items whose facts changed: work in proportion to the change."""
        assert self.index is not None
        added = self.index.size - old_size
        self.index_active = np.concatenate([self.index_active, np.zeros(added, dtype=bool)])
        self.index_category = np.concatenate(
            [self.index_category, np.full(added, -1, dtype=np.int32)]
        )
        positions = range(old_size, self.index.size)
        touched = [self.index.keys[p] for p in positions]
        touched += [key for key in changed if key in self.index.position]
        for key in touched:
            self._set_mask(self.index.position.get(key), key)

    def _set_mask(self, position: int | None, key: str) -> None:
        facts = self.items.get(key)
        if position is None or facts is None:
            return
        self.index_active[position] = facts.active
        self.index_category[position] = (
            -1
            if facts.category is None
            else self.categories.setdefault(facts.category, len(self.categories))
        )

    def _align_masks(self) -> None:
        """Recompute the per-position active flags and category codes of the index."""
        if self.index is None:
            self.index_active = np.zeros(0, dtype=bool)
            self.index_category = np.zeros(0, dtype=np.int32)
            return
        self.index_active = np.zeros(self.index.size, dtype=bool)
        self.index_category = np.full(self.index.size, -1, dtype=np.int32)
        for key, position in self.index.position.items():
            self._set_mask(position, key)

    # -- persistence ------------------------------------------------------------------------

    def _index_settings(self) -> IndexSettings:
        return IndexSettings(ann_threshold=self.recommend.ann_threshold)

    def _index_folder(self, choice: EncoderChoice) -> Path:
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", choice.key)
        return Path(self.settings.artifacts_dir) / "recommend" / "index" / name

    def _save_index(self) -> None:
        with self.lock:
            if self.index is None or self.encoder is None or self._vectors_settled is None:
                return
            folder = self._index_folder(self.encoder)
            self.index.save(folder)
            state = {
                "vectors_settled": self._vectors_settled.isoformat(),
                "hashes": self._hashes,
            }
            (folder / "state.json").write_text(json.dumps(state))
