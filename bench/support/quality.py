"""Support bot quality on Banking77, through the product's own path.

The intents go into a support catalogue in a scratch SQLite database and the model is trained
with `apps.support.training.train_from_catalogue` (calibration and handoff thresholds
included), exactly as `textsuite train support` does; the baseline — logistic regression on
frozen MiniLM embeddings — is fitted in the same run.
"""

from __future__ import annotations

import dataclasses
import random
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import insert

from bench.common import REPO_ROOT, product_placement


@dataclass(frozen=True)
class Outcome:
    accuracy: float
    macro_f1: float
    seconds: float
    probabilities: np.ndarray  # (N, C) on the test texts
    labels: list[str]
    thresholds: dict[str, float]
    similarity: np.ndarray | None  # (N,) to the nearest training example, where kept
    pseudo_labelled: int = 0  # stored messages self-training added to the training split
    int8: Outcome | None = None  # the same version served from its ONNX int8 export
    int8_check: str = ""  # the export's check against torch, or why it does not serve


def _catalogue_session(
    workdir: Path, data: Any, messages: Sequence[str] = ()
) -> tuple[Any, Any, Any]:
    """Scratch database with `data` imported as the support catalogue, and `messages` stored
    as one conversation's customer messages that nobody labelled."""
    import migrations
    from apps.support.catalogue import create_intent
    from apps.support.models import Conversation, Message, MessageRole
    from core.settings import load_settings
    from core.storage.engine import get_session_factory, session_scope

    url = f"sqlite:///{workdir / 'bench.db'}"
    migrations.upgrade(url)
    settings = load_settings(
        _env_file=None,
        database_url=url,
        artifacts_dir=workdir / "artifacts",
        model_cache_dir=REPO_ROOT / "var" / "models",
    )
    factory = get_session_factory(url)
    by_intent: dict[str, list[str]] = {}
    seen: dict[str, str] = {}
    for text, label in zip(data.texts, data.labels, strict=True):
        key = " ".join(text.casefold().split())
        if seen.setdefault(key, label) == label:  # an utterance teaches one intent only
            by_intent.setdefault(label, []).append(text)
    with session_scope(factory) as session:
        for name, examples in by_intent.items():
            create_intent(session, name, answer=f"Answer for {name}.", examples=examples)
        if messages:
            conversation = Conversation(channel="api", external_id="bench")
            session.add(conversation)
            session.flush()
            session.execute(
                insert(Message),
                [
                    {"conversation_id": conversation.id, "role": MessageRole.CUSTOMER, "text": t}
                    for t in messages
                ],
            )
    return settings, factory, url


def train_support(
    train: Any,
    test: Any,
    arguments: dict[str, Any],
    messages: Sequence[str] = (),
    *,
    int8: bool = False,
) -> Outcome:
    """Train the support intent model on `train`, with `messages` stored as unlabelled
    customer messages (self-training learns from them); score it on `test`. With `int8`,
    score the version's ONNX int8 export too, as `TEXTSUITE_SERVE_INT8` serves it, with the
    thresholds training fitted on the torch model (`Outcome.int8`)."""
    from apps.support.settings import load_support_settings
    from apps.support.training import train_from_catalogue
    from core.ml.loading import load_classifier
    from core.ml.onnx import OnnxClassifier
    from core.ml.references import folder_resolver
    from core.ml.serving import INT8_FOLDER, int8_verdict
    from core.ml.training import TrainingArguments
    from core.ml.versions import production_version

    with tempfile.TemporaryDirectory(prefix="bench-support-") as scratch:
        settings, factory, _ = _catalogue_session(Path(scratch), train, messages)
        started = time.perf_counter()
        train_from_catalogue(
            settings,
            load_support_settings(_env_file=None, learn_from_messages=bool(messages)),
            factory,
            arguments=TrainingArguments.from_dict(arguments),
        )
        seconds = time.perf_counter() - started
        with factory() as session:
            version = production_version(session, "support-intents")
            folder, thresholds = Path(version.artifact_path), version.config["thresholds"]
            added = version.metrics.get("self_training", {}).get("pseudo_labelled", 0)
        torch_outcome = _scored(
            load_classifier(folder, product_placement()), folder, test, seconds, thresholds
        )
        if not int8:
            return dataclasses.replace(torch_outcome, pseudo_labelled=added)
        # What `load_for_serving` does with TEXTSUITE_SERVE_INT8 on a CPU: export, check
        # against torch on the held-out examples, serve the export only if it passed.
        verdict = int8_verdict(folder, folder_resolver(settings.model_cache_dir, factory))
        int8_outcome = (
            _scored(OnnxClassifier.load(folder / INT8_FOLDER), folder, test, seconds, thresholds)
            if verdict["acceptable"]
            else None
        )
    check = verdict["summary"]
    return dataclasses.replace(
        torch_outcome, pseudo_labelled=added, int8=int8_outcome, int8_check=check
    )


def _scored(
    classifier: Any, folder: Path, test: Any, seconds: float, thresholds: dict[str, float]
) -> Outcome:
    """`classifier` (a version's torch model or int8 export) scored on `test`, with the
    similarity to the nearest training example where the version keeps its examples."""
    from core.ml.evaluation import classification_metrics, label_ids_for
    from core.ml.novelty import ExampleIndex, reads_embeddings, score_texts

    index = ExampleIndex.load(folder)
    similarity: np.ndarray | None = None
    if index is not None and reads_embeddings(classifier):
        probabilities, similarity = score_texts(classifier, index, test.texts)
    else:
        probabilities = classifier.predict_proba(test.texts)
    known = [i for i, label in enumerate(test.labels) if label in classifier.labels]
    metrics = classification_metrics(
        label_ids_for([test.labels[i] for i in known], classifier.labels),
        probabilities[known],
        classifier.labels,
    )
    return Outcome(
        metrics["accuracy"],
        metrics["macro_f1"],
        seconds,
        probabilities,
        list(classifier.labels),
        thresholds,
        similarity,
    )


def frozen_baseline(train: Any, test: Any) -> tuple[float, float, float]:
    """(accuracy, macro-F1, seconds) of logistic regression on frozen MiniLM embeddings."""
    from sklearn.linear_model import LogisticRegressionCV

    from core.ml.evaluation import classification_metrics, label_ids_for
    from core.ml.loading import load_encoder
    from core.ml.packaged import minilm_folder

    labels = train.label_names
    started = time.perf_counter()
    encoder = load_encoder(minilm_folder(REPO_ROOT / "var" / "models"), product_placement())
    head = LogisticRegressionCV(Cs=[0.1, 1.0, 10.0, 100.0], cv=5, max_iter=3000)
    head.fit(encoder.encode(train.texts), label_ids_for(train.labels, labels))
    seconds = time.perf_counter() - started
    probabilities = head.predict_proba(encoder.encode(test.texts))
    metrics = classification_metrics(label_ids_for(test.labels, labels), probabilities, labels)
    return metrics["accuracy"], metrics["macro_f1"], seconds


def handoff_quality(outcome: Outcome, test: Any, out_of_scope: set[str]) -> dict[str, float]:
    """In-scope accuracy and out-of-scope recall at the version's calibrated thresholds."""
    from apps.support.policy import decide

    answered_right = answered = in_scope = handed_off_oos = oos = 0
    similarities = (
        outcome.similarity if outcome.similarity is not None else [None] * len(test.labels)
    )
    for row, similarity, label in zip(
        outcome.probabilities, similarities, test.labels, strict=True
    ):
        decision = decide(
            row,
            outcome.labels,
            outcome.thresholds,
            text="",
            similarity=None if similarity is None else float(similarity),
        )
        handed_off = decision.handoff_reason is not None
        if label in out_of_scope:
            oos += 1
            handed_off_oos += handed_off
        else:
            in_scope += 1
            if not handed_off:
                answered += 1
                answered_right += decision.intent == label
    return {
        "in_scope_answered_accuracy": answered_right / max(answered, 1),
        "in_scope_coverage": answered / max(in_scope, 1),
        "in_scope_accuracy_counting_handoffs_as_wrong": answered_right / max(in_scope, 1),
        "out_of_scope_recall": handed_off_oos / max(oos, 1),
    }


def intent_text_accuracy(shots: int, seeds: list[int], arguments: dict[str, Any]) -> dict:
    """Few-shot accuracy on the demo catalogue: `shots` examples of each intent trained on,
    the rest as test, with the examples alone, with the intents' names and with names and
    descriptions (`apps.support.training.with_intent_text`); test accuracy by seed."""
    from apps.support.catalogue_formats import CatalogueFormat, read_catalogue
    from apps.support.demo import CATALOGUE
    from apps.support.training import with_intent_text
    from core.ml.evaluation import label_ids_for
    from core.ml.loading import load_classifier
    from core.ml.packaged import minilm_folder
    from core.ml.training import LabelledTexts, TrainingArguments, train_classifier

    intents = read_catalogue(CATALOGUE.read_text(), CatalogueFormat.YAML)
    descriptions = {i.name: i.description for i in intents if i.description}
    base, placement = minilm_folder(REPO_ROOT / "var" / "models"), product_placement()
    accuracy: dict[str, list[float]] = {"examples": [], "+ names": [], "+ descriptions": []}
    for seed in seeds:
        rng = random.Random(seed)
        train, test = LabelledTexts([], []), LabelledTexts([], [])
        for intent in intents:
            texts = [example.text for example in intent.examples]
            rng.shuffle(texts)
            for part, chosen in ((train, texts[:shots]), (test, texts[shots:])):
                part.texts.extend(chosen)
                part.labels.extend([intent.name] * len(chosen))
        variants = {
            "examples": train,
            "+ names": with_intent_text(train),
            "+ descriptions": with_intent_text(train, descriptions),
        }
        args = TrainingArguments.from_dict({"validation_fraction": 0, **arguments, "seed": seed})
        for name, data in variants.items():
            with tempfile.TemporaryDirectory(prefix="bench-support-") as scratch:
                folder = Path(scratch) / "model"
                train_classifier(
                    base, data, args, output_dir=folder, base_reference="minilm",
                    placement=placement,
                )  # fmt: skip
                classifier = load_classifier(folder, placement)
                predicted = classifier.predict_proba(test.texts).argmax(axis=1)
            right = predicted == label_ids_for(test.labels, classifier.labels)
            accuracy[name].append(float(right.mean()))
            print(f"  seed {seed}, {name}: {accuracy[name][-1]:.4f}", flush=True)
    return {"shots": shots, "n_test": len(test), "seeds": seeds, "accuracy": accuracy}
