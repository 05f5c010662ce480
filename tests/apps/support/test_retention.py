"""`TEXTSUITE_SUPPORT_RETENTION_DAYS`: idle conversations go, with what hangs off them."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from apps.support.catalogue import create_intent
from apps.support.models import (
    Conversation,
    Customer,
    Example,
    Message,
    MessageRole,
    ReviewItem,
)
from apps.support.retention import retention
from core.storage.engine import session_scope


def count(factory: sessionmaker[Session], model: type) -> int:
    with factory() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_conversations_idle_past_the_retention_go_with_their_messages(
    session_factory: sessionmaker[Session],
) -> None:
    now = dt.datetime.now(dt.UTC)
    with session_scope(session_factory) as session:
        create_intent(session, "order_status", answer="...", examples=["where is my order"])
        customer = Customer(external_id="cust-1", name="Maya")
        session.add(customer)
        session.flush()
        for name, idle_days in [("old", 40), ("recent", 2)]:
            conversation = Conversation(channel="api", external_id=name, customer_id=customer.id,
                                        updated_at=now - dt.timedelta(days=idle_days))  # fmt: skip
            session.add(conversation)
            session.flush()
            message = Message(conversation_id=conversation.id, role=MessageRole.CUSTOMER,
                              text=f"{name} question", handoff=True)  # fmt: skip
            session.add(message)
            session.flush()
            session.add(ReviewItem(message_id=message.id, reason="low_confidence"))
            session.flush()
            # Writing to it touches `updated_at`; set the idle time again, as it was.
            conversation.updated_at = now - dt.timedelta(days=idle_days)
    keep_30_days = retention(30, session_factory)
    assert keep_30_days.run() == 1
    with session_factory() as session:
        assert session.scalars(select(Conversation.external_id)).all() == ["recent"]
        assert session.scalars(select(Message.text)).all() == ["recent question"]
    assert count(session_factory, ReviewItem) == 1
    assert count(session_factory, Customer) == 1 and count(session_factory, Example) == 1
    assert keep_30_days.run() == 0
    assert retention(0, session_factory).work() == {}
    assert set(keep_30_days.work()) == {"support retention"}
