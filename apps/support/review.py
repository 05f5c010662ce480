"""The review queue: messages the bot was unsure about or handed off, labelled by people.

A label becomes a training example of that intent (source `review`), so the next training
run learns from what the bot got wrong. The messages nobody labels are not wasted either:
`unlabelled_messages` hands them to self-training (`apps.support.training`).
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from apps.support.catalogue import (
    add_examples,
    example_hash,
    example_owners,
    get_intent,
    normalise_example,
)
from apps.support.models import (
    Example,
    ExampleSource,
    Message,
    MessageRole,
    ReviewItem,
    ReviewStatus,
)
from core.storage.base import utcnow


class ReviewItemNotFound(LookupError):
    pass


def pending_items(
    session: Session,
    status: ReviewStatus = ReviewStatus.PENDING,
    limit: int = 50,
    offset: int = 0,
) -> list[ReviewItem]:
    """Review items in `status`, oldest first."""
    return list(
        session.scalars(
            select(ReviewItem)
            .options(selectinload(ReviewItem.message), selectinload(ReviewItem.label_intent))
            .where(ReviewItem.status == status)
            .order_by(ReviewItem.created_at, ReviewItem.id)
            .limit(limit)
            .offset(offset)
        )
    )


def unlabelled_messages(session: Session, limit: int, chunk: int = 1_000) -> list[str]:
    """The newest customer messages (as stored, masked) that nobody labelled or dismissed,
    each text once (case and spacing aside) and none that is a catalogue example already:
    at most `limit` of them, newest first."""
    reviewed = select(ReviewItem.message_id).where(ReviewItem.status != ReviewStatus.PENDING)
    rows = session.scalars(
        select(Message.text)
        .where(Message.role == MessageRole.CUSTOMER, Message.id.not_in(reviewed))
        .order_by(Message.created_at.desc(), Message.id)
        .execution_options(yield_per=chunk)
    )
    found: dict[str, str] = {}  # example hash -> text
    for batch in rows.partitions(chunk):
        candidates: dict[str, str] = {}
        for text in batch:
            clean = " ".join(text.split())
            text_hash = example_hash(clean)
            if clean and text_hash not in found:
                candidates.setdefault(text_hash, clean)
        examples = example_owners(session, candidates)
        found.update((key, text) for key, text in candidates.items() if key not in examples)
        if len(found) >= limit:
            break
    return list(found.values())[:limit]


def _open_item(session: Session, item_id: uuid.UUID) -> ReviewItem:
    """The item, ready for a decision: a labelled one has the example its label added taken
    back (a reviewer correcting a mislabel moves it, or dismisses it)."""
    item = session.get(ReviewItem, item_id)
    if item is None:
        raise ReviewItemNotFound(f"no review item {item_id}")
    if item.status is ReviewStatus.LABELLED and item.label_intent_id is not None:
        digest = example_hash(normalise_example(item.message.text))
        added = session.scalars(
            select(Example).where(
                Example.intent_id == item.label_intent_id,
                Example.text_hash == digest,
                Example.source == ExampleSource.REVIEW,
            )
        ).first()
        if added is not None:
            session.delete(added)
            session.flush()
        item.status, item.label_intent_id = ReviewStatus.PENDING, None
    return item


def label_item(
    session: Session, item_id: uuid.UUID, intent_name: str, reviewer: str | None = None
) -> ReviewItem:
    """Label the message with `intent_name`; its (masked) text becomes a training example.
    An item labelled before is labelled again: its example moves to the new intent."""
    item = _open_item(session, item_id)
    intent = get_intent(session, intent_name)
    add_examples(session, intent, [item.message.text], source=ExampleSource.REVIEW)
    item.status, item.label_intent_id = ReviewStatus.LABELLED, intent.id
    item.reviewer, item.reviewed_at = reviewer, utcnow()
    session.flush()
    return item


def dismiss_item(session: Session, item_id: uuid.UUID, reviewer: str | None = None) -> ReviewItem:
    """Nothing to learn from this message (spam, small talk out of scope...); an item labelled
    before loses the example its label added."""
    item = _open_item(session, item_id)
    item.status, item.reviewer, item.reviewed_at = ReviewStatus.DISMISSED, reviewer, utcnow()
    session.flush()
    return item
