"""The catalogue service on SQLite and PostgreSQL: intents, examples, checks, training data."""

from __future__ import annotations

import hashlib
import uuid

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from apps.support import catalogue
from apps.support.models import Example, ExampleSource, Intent


def make_intent(session: Session, name: str = "order_status", **fields: object) -> Intent:
    fields.setdefault("answer", "Hi {customer_name|there}! Order {order_id} is on its way.")
    fields.setdefault("examples", ["Where is my order?", "has my parcel shipped yet"])
    return catalogue.create_intent(session, name, **fields)  # type: ignore[arg-type]


def test_create_get_and_list_with_counts(db_session: Session) -> None:
    make_intent(db_session, tags=["orders", " orders ", "shipping"], owner=" support-team ")
    make_intent(db_session, "refund", answer="", examples=["I want my money back"])

    intent = catalogue.get_intent(db_session, "order_status")
    assert intent.tags == ["orders", "shipping"] and intent.owner == "support-team"
    assert [e.text for e in intent.examples] == ["Where is my order?", "has my parcel shipped yet"]
    summaries = catalogue.list_intents(db_session)
    assert [(s.name, s.example_count) for s in summaries] == [("order_status", 2), ("refund", 1)]


def test_examples_are_normalised_and_hashed_case_folded(db_session: Session) -> None:
    intent = make_intent(db_session, examples=["  Where\tis   my\norder? "])
    example = intent.examples[0]
    assert example.text == "Where is my order?"
    assert example.text_hash == hashlib.sha256(b"where is my order?").hexdigest()
    assert example.source is ExampleSource.CATALOGUE


def test_duplicate_examples_of_the_same_intent_are_skipped(db_session: Session) -> None:
    intent = make_intent(db_session)
    added = catalogue.add_examples(
        db_session, intent, ["WHERE IS MY ORDER?", "where  is my order?", "Is it shipped?"]
    )
    assert [e.text for e in added.added] == ["Is it shipped?"]
    assert added.duplicates == ["WHERE IS MY ORDER?", "where is my order?"]
    count = db_session.scalar(select(func.count()).select_from(Example))
    assert count == 3


def test_an_utterance_cannot_teach_two_intents(db_session: Session) -> None:
    make_intent(db_session)
    refund = make_intent(db_session, "refund", examples=["money back please"])
    with pytest.raises(catalogue.ExampleConflict, match="'where is my order\\?' teaches") as exc:
        catalogue.add_examples(db_session, refund, ["refund me", "where is my order?"])
    assert exc.value.conflicts == {"where is my order?": "order_status"}
    assert [e.text for e in catalogue.get_intent(db_session, "refund").examples] == [
        "money back please"
    ]


def test_duplicate_name_is_refused(db_session: Session) -> None:
    make_intent(db_session)
    with pytest.raises(catalogue.IntentExists, match="'order_status' already exists"):
        make_intent(db_session, examples=["another"])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "Order Status"}, "name must match .*try 'order_status'"),
        ({"name": "Café Hours"}, "name must match .*try 'cafe_hours'"),
        ({"name": "-x"}, "name must match"),
        ({"name": "a" * 101}, "name must match"),
        ({"answer": "Hello {name"}, "answer template: unmatched '{' at character 7"),
        ({"answer": "x" * 4001}, "answer is 4,001 characters long; the limit is 4,000"),
        ({"examples": ["   "]}, "example 1: example is empty"),
        ({"examples": ["ok", "x" * 1001]}, "example 2: example is 1,001 characters long"),
        ({"examples": ["bad\x00byte"]}, "control character U\\+0000 at character 4"),
        ({"tags": ["a|b"]}, "contains '\\|', which separates tags in CSV"),
        ({"handoff": "false"}, "handoff must be true or false, got 'false'"),
        ({"description": "\x07"}, "control character U\\+0007"),
    ],
)
def test_invalid_values_say_what_is_wrong(
    db_session: Session, fields: dict[str, object], message: str
) -> None:
    fields = dict(fields)
    name = str(fields.pop("name", "order_status"))
    with pytest.raises(catalogue.InvalidValue, match=message):
        make_intent(db_session, name, **fields)


def test_update_changes_only_given_fields(db_session: Session) -> None:
    make_intent(db_session, owner="support-team", description="where orders are")
    intent = catalogue.update_intent(
        db_session, "order_status", {"answer": "On its way!", "handoff": True, "owner": None}
    )
    assert (intent.answer, intent.handoff, intent.owner) == ("On its way!", True, None)
    assert intent.description == "where orders are"
    with pytest.raises(catalogue.InvalidValue, match="cannot change 'name'; changeable fields"):
        catalogue.update_intent(db_session, "order_status", {"name": "renamed"})
    with pytest.raises(catalogue.InvalidValue, match="unmatched '}'"):
        catalogue.update_intent(db_session, "order_status", {"answer": "oops}"})
    with pytest.raises(catalogue.IntentNotFound, match="no intent named 'nope'"):
        catalogue.update_intent(db_session, "nope", {"answer": ""})


def test_remove_example_keeps_the_last_one(db_session: Session) -> None:
    intent = make_intent(db_session)
    first, second = intent.examples
    catalogue.remove_example(db_session, "order_status", first.id)
    assert [e.text for e in catalogue.get_intent(db_session, "order_status").examples] == [
        second.text
    ]
    with pytest.raises(catalogue.LastExample, match="last example of 'order_status'"):
        catalogue.remove_example(db_session, "order_status", second.id)
    with pytest.raises(catalogue.ExampleNotFound):
        catalogue.remove_example(db_session, "order_status", uuid.uuid4())


def test_delete_intent_removes_its_examples(db_session: Session) -> None:
    make_intent(db_session)
    make_intent(db_session, "refund", examples=["money back"])
    catalogue.delete_intent(db_session, "order_status")
    assert [s.name for s in catalogue.list_intents(db_session)] == ["refund"]
    assert db_session.scalar(select(func.count()).select_from(Example)) == 1
    with pytest.raises(catalogue.IntentNotFound):
        catalogue.delete_intent(db_session, "order_status")


def test_catalogue_for_training_labels_every_example(db_session: Session) -> None:
    make_intent(db_session)
    refund = make_intent(db_session, "refund", examples=["money back"])
    catalogue.add_examples(db_session, refund, ["refund my order"], source=ExampleSource.REVIEW)
    data = catalogue.catalogue_for_training(db_session)
    assert sorted(zip(data.labels, data.texts, strict=True)) == [
        ("order_status", "Where is my order?"),
        ("order_status", "has my parcel shipped yet"),
        ("refund", "money back"),
        ("refund", "refund my order"),
    ]
    assert data.label_names == ["order_status", "refund"]
