"""Training the intent classifier from the catalogue, with calibrated handoff thresholds.

The catalogue (with reviewed examples) is split per intent; the model trains on one part and
the other part decides when the bot must hand off: the top-1 confidence and top-1/top-2
margin at which answers reach the target precision. Those thresholds are stored with the
model version, so a retrained model brings its own.

With `support.learn_from_messages` the run also learns from the customer messages nobody
labelled (self-training): the model trained on the catalogue reads them, the ones it would
answer at its own thresholds become examples of the intent it answers, and a second model
trains on the catalogue plus those; in a second round (`learn_from_messages_rounds`) that
model labels them again for a third.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.orm import Session, sessionmaker

from apps.support.catalogue import catalogue_for_training, intent_descriptions
from apps.support.policy import decide
from apps.support.review import unlabelled_messages
from apps.support.settings import SupportSettings
from core.ml.device import configured_placement
from core.ml.evaluation import label_ids_for, selective_thresholds
from core.ml.loading import Classifier, load_classifier
from core.ml.novelty import (
    ExampleIndex,
    embed_texts,
    reads_embeddings,
    score_texts,
    unfamiliar_threshold,
)
from core.ml.references import folder_resolver
from core.ml.runs import Progress, PromotionPolicy, RunOutcome, run_classifier_training
from core.ml.training import (
    LabelledTexts,
    TrainingArguments,
    TrainingResult,
    run_fingerprint,
    stratified_split,
)
from core.ml.training.self_training import PseudoLabeller
from core.scheduling import Retraining
from core.settings import Settings

TRAIN_JOB = "support.train"
RETRAIN_WORK = "support retraining"


class SupportTrainParams(BaseModel):
    """Parameters of a `support.train` job."""

    model_config = ConfigDict(extra="forbid")

    arguments: dict[str, Any] = Field(default_factory=dict, description="TrainingArguments")
    promotion: PromotionPolicy = PromotionPolicy.IF_NOT_WORSE

    @field_validator("arguments")
    @classmethod
    def _check_arguments(cls, value: dict[str, Any]) -> dict[str, Any]:
        TrainingArguments.from_dict(value)
        return value


def _trained_classifier(
    result: TrainingResult, settings: Settings, factory: sessionmaker[Session] | None
) -> Classifier:
    return load_classifier(
        result.output_dir,
        configured_placement(settings),
        folder_resolver(settings.model_cache_dir, factory),
    )


def handoff_thresholds(
    result: TrainingResult,
    train: LabelledTexts,
    validation: LabelledTexts,
    settings: Settings,
    support: SupportSettings,
    factory: sessionmaker[Session] | None = None,
) -> Mapping[str, Any]:
    """Score the held-out examples with the trained model and choose the thresholds.

    Models with a sentence embedding under their head (the default) also keep their training
    examples' embeddings (`ExampleIndex`, in the model folder) and get an `unfamiliar`
    threshold: the similarity to the nearest training example under which
    `support.unfamiliar_share` of the held-out examples fall."""
    return _calibrate(
        _trained_classifier(result, settings, factory), result, train, validation, support
    )


def _calibrate(
    classifier: Classifier,
    result: TrainingResult,
    train: LabelledTexts,
    validation: LabelledTexts,
    support: SupportSettings,
) -> Mapping[str, Any]:
    """`handoff_thresholds` for a classifier already loaded from `result`'s folder."""
    if len(validation) == 0:
        raise ValueError(
            "no held-out examples to calibrate the handoff thresholds: give every intent at "
            "least two examples, or set validation_fraction above 0"
        )
    label_ids = label_ids_for(validation.labels, classifier.labels)
    unfamiliar: float | None = None
    familiar: np.ndarray | None = None  # (N,) the held-out examples the check lets through
    if reads_embeddings(classifier) and support.unfamiliar_share > 0:
        index = ExampleIndex(embed_texts(classifier, train.texts))
        index.save(result.output_dir)
        probabilities, similarity = score_texts(classifier, index, validation.texts)
        unfamiliar = unfamiliar_threshold(similarity, support.unfamiliar_share)
        if unfamiliar is not None:  # None: too few held-out examples to place it
            familiar = similarity >= unfamiliar
    else:
        probabilities = classifier.predict_proba(validation.texts)
    thresholds = selective_thresholds(
        probabilities, label_ids, support.target_precision, answerable=familiar
    )
    if unfamiliar is not None:
        thresholds["unfamiliar"] = unfamiliar
    return {"thresholds": thresholds}


def answered_messages(
    messages: list[str],
    train: LabelledTexts,
    validation: LabelledTexts,
    settings: Settings,
    support: SupportSettings,
    factory: sessionmaker[Session] | None = None,
) -> PseudoLabeller:
    """Self-training's labeller: of `messages`, the ones a model would answer (at the
    thresholds it calibrates on `validation`, as a version of it would in production),
    labelled with the intent it answers."""

    def label(result: TrainingResult) -> LabelledTexts:
        classifier = _trained_classifier(result, settings, factory)
        thresholds = _calibrate(classifier, result, train, validation, support)
        index = ExampleIndex.load(result.output_dir)
        similarity: list[float | None] = [None] * len(messages)
        if index is not None and reads_embeddings(classifier):
            probabilities, nearest = score_texts(classifier, index, messages)
            similarity = [float(value) for value in nearest]
        else:
            probabilities = classifier.predict_proba(messages)
        texts, labels = [], []
        for text, row, near in zip(messages, probabilities, similarity, strict=True):
            decision = decide(
                row, classifier.labels, thresholds["thresholds"], text=text, similarity=near
            )
            if decision.handoff_reason is None:
                texts.append(text)
                labels.append(decision.intent)
        return LabelledTexts(texts, labels)

    return label


def with_intent_text(
    train: LabelledTexts, descriptions: Mapping[str, str] | None = None
) -> LabelledTexts:
    """`train` plus, for each of its intents, the name in words ("card_arrival" -> "card
    arrival") and the description, where there is one, as more examples of it.

    Both say what an intent is about where a few examples may not. Banking77 at 10 examples
    per intent (names only; it has no descriptions): +0.45 to +0.65 points of test accuracy on
    three seeds. The demo catalogue at 3 examples per intent, the rest as test: 77.5% plain,
    83.4% with the names, 86.2% with names and descriptions (88.5 / 89.8 / 90.7% at 8 per
    intent; mean of 5 seeds, `bench.support --parts catalogue`). Training split only: the
    held-out examples, which place the thresholds, stay real messages.
    """
    descriptions = descriptions or {}
    texts, labels = list(train.texts), list(train.labels)
    for name in train.label_names:
        texts.append(re.sub(r"[\s_.-]+", " ", name).strip() or name)
        labels.append(name)
        if descriptions.get(name):
            texts.append(descriptions[name])
            labels.append(name)
    return LabelledTexts(texts, labels)


class CatalogueTooSmall(ValueError):
    """Fewer than two intents have examples: nothing to tell apart."""


def catalogue_split(
    session: Session, support: SupportSettings, arguments: TrainingArguments
) -> tuple[LabelledTexts, LabelledTexts]:
    """The examples a run with `arguments` trains on (with the intents' own text where
    `support.learn_intent_text`) and the held-out ones it calibrates the handoff on."""
    data = catalogue_for_training(session)
    if len(data.label_names) < 2:
        raise CatalogueTooSmall(
            f"the catalogue has {len(data.label_names)} intent(s) with examples; training needs "
            "at least two (import a catalogue with `textsuite support import`)"
        )
    train, validation = stratified_split(data, arguments.validation_fraction, arguments.seed)
    if support.learn_intent_text:
        train = with_intent_text(train, intent_descriptions(session))
    return train, validation


def retraining(support: SupportSettings, factory: sessionmaker[Session]) -> Retraining:
    """Scheduled retraining (`support.retrain_every_h`): due when what a run reads changed
    since the last one: the catalogue's examples (reviewed messages included), held-out ones
    too, and with `support.learn_from_messages` the messages nobody labelled."""

    def fingerprint(params: Mapping[str, Any]) -> str | None:
        arguments = TrainingArguments.from_dict(SupportTrainParams.model_validate(params).arguments)
        with factory() as session:
            try:
                train, validation = catalogue_split(session, support, arguments)
            except CatalogueTooSmall:
                return None
            messages = _messages_to_learn_from(session, support)
        return run_fingerprint(train, validation, messages)

    return Retraining(
        RETRAIN_WORK, support.model_name, TRAIN_JOB, support.retrain_every_h, factory, fingerprint
    )


def train_from_catalogue(
    settings: Settings,
    support: SupportSettings,
    factory: sessionmaker[Session],
    *,
    arguments: TrainingArguments,
    job_id: uuid.UUID | None = None,
    progress: Progress | None = None,
    promotion: PromotionPolicy = PromotionPolicy.IF_NOT_WORSE,
) -> RunOutcome:
    """Train a new version of the intent model on the current catalogue."""
    with factory() as session:
        train, validation = catalogue_split(session, support, arguments)
        messages = _messages_to_learn_from(session, support)
    return run_classifier_training(
        settings,
        factory,
        model_name=support.model_name,
        base_reference=support.base_model,
        data=train,
        arguments=arguments,
        validation=validation,
        job_id=job_id,
        progress=progress,
        promotion=promotion,
        extra_config=lambda result: handoff_thresholds(
            result, train, validation, settings, support, factory
        ),
        pseudo_labels=(
            answered_messages(messages, train, validation, settings, support, factory)
            if messages
            else None
        ),
        unlabelled=messages,
        self_training_rounds=support.learn_from_messages_rounds,
    )


def _messages_to_learn_from(session: Session, support: SupportSettings) -> list[str]:
    if not support.learn_from_messages:
        return []
    return unlabelled_messages(session, support.learn_from_messages_limit)
