"""Training the intent model from the catalogue: what goes into the training split."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from apps.support.training import with_intent_text
from core.ml.training import LabelledTexts
from core.storage.engine import get_session_factory, session_scope
from tests.apps.support.conftest import QUICK_TRAINING
from tests.conftest import make_settings


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

    database = tmp_path / "catalogue.db"
    shutil.copy(sqlite_template, database)
    url = f"sqlite:///{database}"
    factory = get_session_factory(url)
    examples = {
        "order_status": ["where is my order", "has my parcel shipped", "track my package",
                         "when does my order arrive", "order not here yet"],
        "cancel_order": ["cancel my order", "I want to cancel", "stop my order please",
                         "please cancel the purchase", "undo my order"],
    }  # fmt: skip
    with session_scope(factory) as session:
        for name, texts in examples.items():
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
