"""Training the intent model from the catalogue: what goes into the training split."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from apps.support.training import with_intent_text
from core.ml.training import LabelledTexts
from core.settings import Settings
from core.storage.engine import get_session_factory, session_scope
from tests.apps.support.conftest import QUICK_TRAINING
from tests.conftest import make_settings

EXAMPLES = {
    "order_status": ["where is my order", "has my parcel shipped", "track my package",
                     "when does my order arrive", "order not here yet"],
    "cancel_order": ["cancel my order", "I want to cancel", "stop my order please",
                     "please cancel the purchase", "undo my order"],
}  # fmt: skip


def scratch_catalogue(tmp_path: Path, sqlite_template: Path) -> tuple[str, sessionmaker[Session]]:
    """A migrated SQLite file of its own (URL, session factory), for a training run."""
    database = tmp_path / "catalogue.db"
    shutil.copy(sqlite_template, database)
    url = f"sqlite:///{database}"
    return url, get_session_factory(url)


def test_each_intent_name_in_words_and_its_description_become_more_examples() -> None:
    train = LabelledTexts(
        ["where is my parcel", "cancel it please", "has it shipped"],
        ["order_status", "cancel-order", "order_status"],
    )
    named = with_intent_text(train, {"order_status": "Where an order is", "unused": "x"})
    assert named.texts[:3] == train.texts and named.labels[:3] == train.labels
    assert list(zip(named.texts[3:], named.labels[3:], strict=True)) == [
        ("cancel order", "cancel-order"),
        ("order status", "order_status"),
        ("Where an order is", "order_status"),
    ]
    assert with_intent_text(LabelledTexts(["hi"], ["v2.refund__policy"])).texts[1] == (
        "v2 refund policy"
    )


@pytest.mark.parametrize("learn_text", [True, False])
def test_training_from_the_catalogue_learns_names_and_descriptions_only_when_set(
    tmp_path: Path, sqlite_template: Path, learn_text: bool
) -> None:
    """Names and descriptions reach the training split (the model's example index holds
    them) and never the held-out split that places the thresholds."""
    from apps.support.catalogue import create_intent
    from apps.support.settings import load_support_settings
    from apps.support.training import train_from_catalogue
    from core.ml.novelty import ExampleIndex
    from core.ml.training import TrainingArguments
    from core.ml.versions import production_version

    url, factory = scratch_catalogue(tmp_path, sqlite_template)
    with session_scope(factory) as session:
        for name, texts in EXAMPLES.items():
            description = "Where a placed order is" if name == "order_status" else None
            create_intent(session, name, answer="...", description=description, examples=texts)
    outcome = train_from_catalogue(
        make_settings(database_url=url, artifacts_dir=tmp_path / "artifacts"),
        load_support_settings(_env_file=None, learn_intent_text=learn_text),
        factory,
        arguments=TrainingArguments.from_dict({**QUICK_TRAINING, "validation_fraction": 0.4}),
    )
    with factory() as session:
        version = production_version(session, "support-intents")
    index = ExampleIndex.load(Path(version.artifact_path))
    assert outcome.promoted and index is not None
    # 3 of each intent's 5 examples trained on, 2 held out; plus, if set, one name per intent
    # and the one description.
    assert len(index) == 6 + (3 if learn_text else 0)


def test_unlabelled_messages_are_the_newest_customer_texts_nobody_labelled(
    db_session: Session,
) -> None:
    from apps.support.catalogue import create_intent, get_intent
    from apps.support.models import Conversation, Message, MessageRole, ReviewItem, ReviewStatus
    from apps.support.review import unlabelled_messages

    create_intent(db_session, "cancel_order", answer="...", examples=["Cancel my order"])
    conversation = Conversation(channel="api", external_id="c-1")
    db_session.add(conversation)
    db_session.flush()
    start = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    sent = [  # (role, text, review status), oldest first
        (MessageRole.CUSTOMER, "Where is my parcel?", None),
        (MessageRole.CUSTOMER, "where is  my PARCEL?", None),  # the same text, newer
        (MessageRole.BOT, "Your parcel is on its way", None),
        (MessageRole.CUSTOMER, "cancel my order", None),  # a catalogue example already
        (MessageRole.CUSTOMER, "my card was charged twice", ReviewStatus.DISMISSED),
        (MessageRole.CUSTOMER, "refund please", ReviewStatus.LABELLED),
        (MessageRole.CUSTOMER, "I still have no parcel", ReviewStatus.PENDING),
        (MessageRole.CUSTOMER, "change my  address", None),
    ]
    for minute, (role, text, status) in enumerate(sent):
        message = Message(
            conversation_id=conversation.id,
            role=role,
            text=text,
            created_at=start + dt.timedelta(minutes=minute),
        )
        db_session.add(message)
        db_session.flush()
        if status is not None:
            label = get_intent(db_session, "cancel_order").id
            db_session.add(ReviewItem(message_id=message.id, reason="low_confidence",
                                      status=status, label_intent_id=label))  # fmt: skip
    db_session.flush()

    expected = ["change my address", "I still have no parcel", "where is my PARCEL?"]
    assert unlabelled_messages(db_session, limit=10) == expected
    assert unlabelled_messages(db_session, limit=10, chunk=2) == expected  # read in pieces
    assert unlabelled_messages(db_session, limit=2, chunk=2) == expected[:2]


@pytest.mark.parametrize("learn", [True, False])
def test_training_learns_from_the_messages_the_first_model_would_answer_only_when_set(
    tmp_path: Path, sqlite_template: Path, learn: bool
) -> None:
    """Self-training: unlabelled customer messages the first model answers join the second
    model's training split; the held-out split, the thresholds' ground, stays the same."""
    from apps.support.catalogue import create_intent
    from apps.support.models import Conversation, Message, MessageRole
    from apps.support.settings import load_support_settings
    from apps.support.training import train_from_catalogue
    from core.ml.training import TrainingArguments
    from core.ml.versions import production_version

    url, factory = scratch_catalogue(tmp_path, sqlite_template)
    messages = ["where is my order now", "please cancel my order", "track my parcel please",
                "I want to cancel my purchase", "what is the weather like"]  # fmt: skip
    with session_scope(factory) as session:
        for name, texts in EXAMPLES.items():
            create_intent(session, name, answer="...", examples=texts)
        conversation = Conversation(channel="api", external_id="c-1")
        session.add(conversation)
        session.flush()
        for text in messages:
            session.add(
                Message(conversation_id=conversation.id, role=MessageRole.CUSTOMER, text=text)
            )
    outcome = train_from_catalogue(
        make_settings(database_url=url, artifacts_dir=tmp_path / "artifacts"),
        load_support_settings(_env_file=None, learn_from_messages=learn, learn_intent_text=False),
        factory,
        arguments=TrainingArguments.from_dict({**QUICK_TRAINING, "validation_fraction": 0.4}),
    )
    with factory() as session:
        version = production_version(session, "support-intents")
    metrics = version.metrics
    assert outcome.promoted and metrics["n_validation"] == 4  # 2 of each intent's 5
    if not learn:
        assert "self_training" not in metrics and metrics["n_train"] == 6
        return
    added = metrics["self_training"]["pseudo_labelled"]
    assert 1 <= added <= len(messages) and metrics["n_train"] == 6 + added
    assert set(metrics["self_training"]["first_model"]) >= {"accuracy", "macro_f1"}
    # Only the version's own folder is left in the artifacts.
    assert [p.name for p in Path(version.artifact_path).parent.iterdir()] == [
        Path(version.artifact_path).name
    ]


def test_scheduled_retraining_trains_again_only_when_reviewed_labels_changed_the_catalogue(
    world_settings: Settings,
) -> None:
    """The fingerprint the schedule compares is the one the run recorded: the demo world's
    model, trained outside any job, is up to date until a reviewer labels a message; then a
    job retrains it with the same recipe (in this process: no broker), and it is up to date
    again. A new unlabelled message is new data only where the bot learns from messages."""
    from apps.support.catalogue import add_examples, get_intent
    from apps.support.models import Conversation, Message, MessageRole
    from apps.support.settings import load_support_settings
    from apps.support.training import retraining
    from core.storage.models import Job, JobStatus, TrainingRun
    from tests.workers.conftest import wait_for_job
    from workers.dispatch import create_dispatcher

    factory = get_session_factory(world_settings.database_url)
    support = load_support_settings(_env_file=None, retrain_every_h=1.0)

    def age_runs() -> None:  # and their jobs: the last training was two hours ago
        with session_scope(factory) as session:
            for item in [*session.scalars(select(TrainingRun)), *session.scalars(select(Job))]:
                item.created_at -= dt.timedelta(hours=2)

    age_runs()
    dispatcher = create_dispatcher(world_settings)
    try:
        current = retraining(support, factory).check(dispatcher)
        assert (current.job_id, current.reason) == (None, "no new training data since the last run")
        with session_scope(factory) as session:
            add_examples(session, get_intent(session, "order_status"), ["where has my box got to"])
        due = retraining(support, factory).check(dispatcher)
        assert due.job_id is not None, due.reason
        job = wait_for_job(factory, due.job_id, timeout_s=300)
        assert job.status is JobStatus.SUCCEEDED, job.error
        with factory() as session:
            runs = session.scalars(select(TrainingRun).order_by(TrainingRun.created_at)).all()
            jobs = session.scalars(select(Job)).all()
        assert len(runs) == 2 and runs[1].job_id == job.id and len(jobs) == 1
        # The same recipe (the world's quick training, as that run resolved it).
        assert job.params["promotion"] == "if-not-worse"
        assert job.params["arguments"].items() >= QUICK_TRAINING.items()
        assert runs[1].params == runs[0].params
        assert runs[1].data_fingerprint != runs[0].data_fingerprint
        soon = retraining(support, factory).check(dispatcher)
        assert "last training started 0.0 h ago" in soon.reason
        age_runs()
        after = retraining(support, factory).check(dispatcher)
        assert after.reason == "no new training data since the last run"

        # A message nobody labelled is new data only for runs that learn from messages.
        learning = load_support_settings(
            _env_file=None, retrain_every_h=1.0, learn_from_messages=True
        )
        before = retraining(learning, factory).fingerprint(job.params)
        with session_scope(factory) as session:
            conversation = Conversation(channel="api", external_id="retraining")
            session.add(conversation)
            session.flush()
            session.add(
                Message(
                    conversation_id=conversation.id,
                    role=MessageRole.CUSTOMER,
                    text="can I pay with a gift card",
                )
            )
        assert retraining(learning, factory).fingerprint(job.params) != before
        unchanged = retraining(support, factory)
        assert unchanged.fingerprint(job.params) == runs[1].data_fingerprint
        assert unchanged.check(dispatcher).reason == "no new training data since the last run"
    finally:
        dispatcher.close()


def test_a_new_intent_goes_live_when_the_model_is_not_worse_on_todays_examples(
    tmp_path: Path, sqlite_template: Path
) -> None:
    """Production is measured on the new version's held-out examples that it did not train
    on: the ones of an intent it never learnt are its misses, so adding an intent and
    retraining brings it live without force (promoted by hand here: judged the same way), whatever
    figure production earned on its own examples. A class that did not change keeps its
    held-out examples."""
    from apps.support.catalogue import add_examples, create_intent, get_intent
    from apps.support.settings import load_support_settings
    from apps.support.training import catalogue_split, train_from_catalogue
    from core.ml.runs import PromotionPolicy
    from core.ml.training import TrainingArguments
    from core.ml.versions import production_version, promote

    url, factory = scratch_catalogue(tmp_path, sqlite_template)
    with session_scope(factory) as session:
        for name, texts in EXAMPLES.items():
            create_intent(session, name, answer="...", examples=texts)
    settings = make_settings(database_url=url, artifacts_dir=tmp_path / "artifacts")
    support = load_support_settings(_env_file=None, learn_intent_text=False)
    arguments = TrainingArguments.from_dict({**QUICK_TRAINING, "validation_fraction": 0.4})
    assert train_from_catalogue(settings, support, factory, arguments=arguments).promoted
    with session_scope(factory) as session:
        trained, before = catalogue_split(session, support, arguments)
        first = production_version(session, "support-intents")
        # A figure no model reaches: only the comparison on today's examples can pass it.
        first.metrics = {**first.metrics, "macro_f1": 2.0}
        create_intent(session, "rentals", answer="We rent tents.", examples=[
            "can I rent a tent", "do you rent kayaks", "tent hire please", "rent a stove",
            "hire camping gear"])  # fmt: skip
        add_examples(session, get_intent(session, "order_status"), ["parcel still missing"])
    with factory() as session:
        _, after = catalogue_split(session, support, arguments)

    def held(data, label: str) -> list[str]:
        return [t for t, name in zip(data.texts, data.labels, strict=True) if name == label]

    assert held(after, "cancel_order") == held(before, "cancel_order")
    moved = set(held(after, "order_status")) - set(held(before, "order_status"))
    assert len(moved) <= 1  # the new example, or one other (the class holds out one more)
    # Left as a candidate, then promoted by hand: the same like-for-like comparison.
    outcome = train_from_catalogue(
        settings, support, factory, arguments=arguments, promotion=PromotionPolicy.NEVER
    )
    assert not outcome.promoted
    same_data = outcome.metrics["production_same_data"]
    assert same_data["version_id"] == str(first.id) and same_data["version"] == 1
    unseen = [t for t in after.texts if t not in set(trained.texts)]
    assert same_data["n_examples"] == len(unseen) and len(held(after, "rentals")) == 2
    assert same_data["production"]["macro_f1"] < same_data["candidate"]["macro_f1"]  # rentals
    with session_scope(factory) as session:
        assert promote(session, "support-intents").version == 2  # no force needed
