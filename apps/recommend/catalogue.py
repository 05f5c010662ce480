"""The item catalogue: items as the backend sends them, stored once by their external id.

Sending an item again updates it (idempotent); an item whose embedded text (title,
description, tags, category) changed gets a new `text_hash` and is embedded again. A batch is
all-or-nothing: every item is checked before any is written.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from apps.recommend.models import Item
from core.storage.engine import in_slices

MAX_BATCH = 5_000
ExternalId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
ItemText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=20_000)]
Label = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class ItemIn(BaseModel):
    """An item as the backend describes it: `id` and `metadata` on the wire (the names
    `external_id` and `attributes`, which the tables use, are accepted too)."""

    model_config = ConfigDict(extra="forbid")

    external_id: ExternalId = Field(
        validation_alias=AliasChoices("id", "external_id"),
        description="The backend's own id for the item.",
    )
    title: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]
        | None
    ) = Field(default=None, description="Needed to create an item; an update may leave it out.")
    description: ItemText | None = None
    tags: list[Label] = Field(default_factory=list, max_length=100)
    category: Label | None = None
    series: Label | None = Field(
        default=None, description="A product line; lists show few items of one series."
    )
    attributes: dict[str, Any] = Field(
        default_factory=dict,
        validation_alias=AliasChoices("metadata", "attributes"),
        description="Any other fields (price, brand, ...), returned as they were sent.",
    )
    active: bool = Field(default=True, description="Inactive items are never recommended.")

    @model_validator(mode="before")
    @classmethod
    def _one_name_each(cls, data: Any) -> Any:
        """`id` or `external_id`, `metadata` or `attributes`: both would leave one unread."""
        if isinstance(data, Mapping):
            for name, other in (("id", "external_id"), ("metadata", "attributes")):
                if name in data and other in data:
                    raise ValueError(f"send {name!r} or {other!r} (the same field), not both")
            if "title" in data and data["title"] is None:
                raise ValueError("title cannot be null; leave it out to keep the stored one")
        return data

    @field_validator("tags")
    @classmethod
    def _unique_tags(cls, tags: list[str]) -> list[str]:
        return list(dict.fromkeys(tags))


def item_text(
    title: str, description: str | None, tags: Sequence[str], category: str | None
) -> str:
    """What the encoder reads for an item: `Title. Category: c. Tags: a, b. Description`."""
    parts = [title.rstrip(".") + "."]
    if category:
        parts.append(f"Category: {category}.")
    if tags:
        parts.append(f"Tags: {', '.join(tags)}.")
    if description:
        parts.append(description)
    return " ".join(parts)


def text_of(item: Item | ItemIn) -> str:
    return item_text(item.title, item.description, item.tags, item.category)


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ItemChange(enum.IntEnum):
    """What an upsert did to an item; of two changes to one item, the larger is what the
    item went through (created, then changed again, is created)."""

    UNCHANGED = 0
    UPDATED = 1
    CREATED = 2


@dataclass(frozen=True)
class UpsertReport:
    changes: dict[str, ItemChange]  # by external id, each item once
    to_embed: list[uuid.UUID]  # items whose text is new or changed

    @property
    def created(self) -> int:
        return self._count(ItemChange.CREATED)

    @property
    def updated(self) -> int:
        return self._count(ItemChange.UPDATED)

    @property
    def unchanged(self) -> int:
        return self._count(ItemChange.UNCHANGED)

    def _count(self, change: ItemChange) -> int:
        return sum(1 for done in self.changes.values() if done is change)


class UntitledNewItems(ValueError):
    """New items sent without a title (an update may leave it out; a creation may not)."""

    def __init__(self, external_ids: list[str]) -> None:
        self.external_ids = external_ids
        shown = ", ".join(repr(i) for i in external_ids[:5])
        more = f" and {len(external_ids) - 5} more" if len(external_ids) > 5 else ""
        super().__init__(f"new items need a title: {shown}{more} (not in the catalogue yet)")


def upsert_items(session: Session, items: Sequence[ItemIn]) -> UpsertReport:
    """Create or update `items` in the caller's transaction (the last of a repeated id wins).

    An update changes the fields the item gives and keeps the others: a catalogue file sent
    again without an `active` column does not bring back a retired item (`"description":
    null` clears one). The stored rows are locked first, in id order, so two updates of one
    item at once apply one after the other, never mixed. Two creations of one new item at
    once make the later transaction's flush fail on the unique id (`IntegrityError`): run it
    again, and it finds the item (`store_items` does)."""
    latest = {item.external_id: item for item in items}
    existing = items_by_external_id(session, sorted(latest), lock=True)
    untitled = [i for i in sorted(latest) if i not in existing and latest[i].title is None]
    if untitled:
        raise UntitledNewItems(untitled)
    changes: dict[str, ItemChange] = {}
    to_embed: list[uuid.UUID] = []
    for external_id in sorted(latest):  # new rows in id order too: no two inserts cross
        incoming, record = latest[external_id], existing.get(external_id)
        if record is None:
            fields = incoming.model_dump(exclude={"external_id"})
            digest = text_hash(text_of(incoming))
            record = Item(id=uuid.uuid4(), external_id=external_id, text_hash=digest, **fields)
            session.add(record)
            changes[external_id] = ItemChange.CREATED
            to_embed.append(record.id)
            continue
        given = incoming.model_dump(exclude={"external_id"}, exclude_unset=True)
        changed = {k: v for k, v in given.items() if getattr(record, k) != v}
        if not changed:
            changes[external_id] = ItemChange.UNCHANGED
            continue
        for key, value in changed.items():
            setattr(record, key, value)
        record.updated_at = dt.datetime.now(dt.UTC)
        digest = text_hash(text_of(record))  # of the text as stored now
        if record.text_hash != digest:
            record.text_hash = digest
            to_embed.append(record.id)
        changes[external_id] = ItemChange.UPDATED
    session.flush()
    return UpsertReport(changes, to_embed)


def store_items(session: Session, items: Sequence[ItemIn]) -> UpsertReport:
    """`upsert_items`, committed; run again once if another process created one of the same
    new items meanwhile (the second run finds and updates it)."""
    for attempt in range(2):
        try:
            report = upsert_items(session, items)
            session.commit()
            return report
        except IntegrityError:
            session.rollback()
            if attempt:
                raise
    raise AssertionError("unreachable")


def items_by_external_id(
    session: Session, external_ids: Sequence[str], *, lock: bool = False
) -> dict[str, Item]:
    """The stored items among `external_ids` (any number of them); `lock`: locked for the
    rest of the transaction (`FOR UPDATE`, in id order, so two lockers never cross)."""
    found: dict[str, Item] = {}
    for chunk in in_slices(sorted(external_ids) if lock else external_ids):
        query = select(Item).where(Item.external_id.in_(chunk))
        if lock:
            query = query.order_by(Item.external_id).with_for_update()
        found.update((item.external_id, item) for item in session.scalars(query))
    return found
