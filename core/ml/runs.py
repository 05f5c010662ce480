"""Training runs end to end: resolve the base model, train, record the run and the version,
and promote it when it is not worse than production.

"Not worse" is judged like for like where it can be: a classifier run also scores the
production version on the new version's held-out examples that production did not train on
(each version keeps digests of its training texts, `TRAINED_ON_FILE`), recorded as
`production_same_data` in the new version's metrics; so a catalogue that gained an intent is
not held back by a figure the production version earned on other examples (and without the
new intent).

Apps call `run_classifier_training` with their own data (the support catalogue, the finance
sentiment set) and `run_embedding_training` with pairs (the recommender's co-engaged items);
the generic `core.train_classifier` job calls the first with a file. A run is keyed by
its job, so a redelivered job resumes the same run record instead of creating a second one;
when that run had already recorded its version (the worker died after training), the job does
not train again over the files the version serves from: it only finishes the promotion.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.jobs import JobCancelled
from core.ml import versions
from core.ml.device import configured_placement
from core.ml.evaluation import label_metrics
from core.ml.loading import load_classifier
from core.ml.references import folder_resolver, resolve_model
from core.ml.training import (
    EmbeddingTrainingArguments,
    LabelledTexts,
    TrainingArguments,
    TrainingResult,
    data_fingerprint,
    run_fingerprint,
    text_digest,
    train_classifier,
    train_embeddings,
)
from core.ml.training.data import HELD_OUT_FILE
from core.ml.training.self_training import PseudoLabeller, train_self_training
from core.settings import Settings
from core.storage.base import utcnow
from core.storage.engine import session_scope
from core.storage.models import JobStatus, ModelVersion, TrainingRun

log = logging.getLogger(__name__)

TRAINED_ON_FILE = "trained_on.json"  # digests of the texts a version trained on

Progress = Callable[[float, str | None], None]


class PromotionPolicy(StrEnum):
    IF_NOT_WORSE = "if-not-worse"
    NEVER = "never"
    FORCE = "force"


@dataclass(frozen=True)
class RunOutcome:
    run_id: uuid.UUID
    model_name: str
    version: int
    promoted: bool
    promotion_note: str
    metrics: dict[str, Any]

    def as_result(self) -> dict[str, Any]:
        """The job result: JSON-serialisable."""
        data = asdict(self)
        data["run_id"] = str(self.run_id)
        return data


def _open_run(
    factory: sessionmaker[Session],
    *,
    job_id: uuid.UUID | None,
    model_name: str,
    base_reference: str,
    params: dict[str, Any],
    fingerprint: str,
) -> tuple[uuid.UUID, ModelVersion | None]:
    """The job's run record (new, or the one an earlier delivery opened) and, when that run
    already recorded its version, the version."""
    with session_scope(factory) as session:
        run = None
        if job_id is not None:
            run = session.scalars(select(TrainingRun).where(TrainingRun.job_id == job_id)).first()
        if run is not None:
            recorded = session.scalars(
                select(ModelVersion).where(ModelVersion.training_run_id == run.id)
            ).first()
            if recorded is not None:
                session.expunge(recorded)
                return run.id, recorded
        if run is None:
            run = TrainingRun(job_id=job_id, model_name=model_name, base_model=base_reference)
            session.add(run)
        run.params, run.data_fingerprint = params, fingerprint
        run.status, run.progress, run.error = JobStatus.RUNNING, 0.0, None
        session.flush()
        return run.id, None


def _run_progress(
    factory: sessionmaker[Session], run_id: uuid.UUID, job: Progress | None
) -> Progress:
    """Report progress to the job and, at most every two seconds, to the run record."""
    last_write = 0.0

    def report(fraction: float, message: str | None = None) -> None:
        nonlocal last_write
        if job is not None:
            job(fraction, message)
        if time.monotonic() - last_write >= 2.0 or fraction >= 1.0:
            last_write = time.monotonic()
            with session_scope(factory) as session:
                session.get(TrainingRun, run_id).progress = fraction

    return report


def run_classifier_training(
    settings: Settings,
    factory: sessionmaker[Session],
    *,
    model_name: str,
    base_reference: str,
    data: LabelledTexts,
    arguments: TrainingArguments,
    validation: LabelledTexts | None = None,
    job_id: uuid.UUID | None = None,
    progress: Progress | None = None,
    promotion: PromotionPolicy = PromotionPolicy.IF_NOT_WORSE,
    extra_config: Callable[[TrainingResult], Mapping[str, Any]] | None = None,
    pseudo_labels: PseudoLabeller | None = None,
    unlabelled: Sequence[str] = (),
    self_training_rounds: int = 1,
) -> RunOutcome:
    """Train a classifier version of `model_name` and record it; see the module docstring.

    `extra_config(result)` may add app-specific settings derived from the trained model (e.g.
    the support bot's handoff thresholds) to the version's config before it can be promoted.
    With `pseudo_labels`, the run self-trains (`core.ml.training.self_training`): the model
    trained on `data` labels unlabelled texts (`unlabelled`, which go into the run's data
    fingerprint with `data` and `validation`), and another one trains on both, as many times
    as `self_training_rounds` says.
    """

    def train(base: Path, output_dir: Path, report: Progress) -> TrainingResult:
        placement = configured_placement(settings)
        if pseudo_labels is not None:
            return train_self_training(
                base,
                data,
                arguments,
                pseudo_labels,
                output_dir=output_dir,
                base_reference=base_reference,
                rounds=self_training_rounds,
                placement=placement,
                progress=report,
                validation=validation,
            )
        return train_classifier(
            base,
            data,
            arguments,
            output_dir=output_dir,
            base_reference=base_reference,
            placement=placement,
            progress=report,
            validation=validation,
        )

    return _run(
        settings,
        factory,
        train,
        task="classification",
        model_name=model_name,
        base_reference=base_reference,
        params=arguments.to_dict(),
        fingerprint=run_fingerprint(data, validation, unlabelled),
        job_id=job_id,
        progress=progress,
        promotion=promotion,
        extra_config=extra_config,
        held_out=validation,
        trained_on=data.texts,
    )


def run_embedding_training(
    settings: Settings,
    factory: sessionmaker[Session],
    *,
    model_name: str,
    base_reference: str,
    pairs: Sequence[tuple[str, str]],
    arguments: EmbeddingTrainingArguments,
    job_id: uuid.UUID | None = None,
    progress: Progress | None = None,
    promotion: PromotionPolicy = PromotionPolicy.IF_NOT_WORSE,
) -> RunOutcome:
    """Tune an encoder version of `model_name` on (anchor, positive) pairs and record it."""

    def train(base: Path, output_dir: Path, report: Progress) -> TrainingResult:
        return train_embeddings(
            base,
            pairs,
            arguments,
            output_dir=output_dir,
            base_reference=base_reference,
            placement=configured_placement(settings),
            progress=report,
        )

    return _run(
        settings,
        factory,
        train,
        task="embedding",
        model_name=model_name,
        base_reference=base_reference,
        params=arguments.to_dict(),
        fingerprint=data_fingerprint(pairs),
        job_id=job_id,
        progress=progress,
        promotion=promotion,
    )


def _run(
    settings: Settings,
    factory: sessionmaker[Session],
    train: Callable[[Path, Path, Progress], TrainingResult],
    *,
    task: str,
    model_name: str,
    base_reference: str,
    params: dict[str, Any],
    fingerprint: str,
    job_id: uuid.UUID | None,
    progress: Progress | None,
    promotion: PromotionPolicy,
    extra_config: Callable[[TrainingResult], Mapping[str, Any]] | None = None,
    held_out: LabelledTexts | None = None,
    trained_on: Sequence[str] = (),
) -> RunOutcome:
    _check_writable(settings.artifacts_dir)  # before minutes of training, not after
    base = resolve_model(
        base_reference, cache_dir=settings.model_cache_dir, session_factory=factory
    )
    run_id, recorded = _open_run(
        factory,
        job_id=job_id,
        model_name=model_name,
        base_reference=base_reference,
        params=params,
        fingerprint=fingerprint,
    )
    if recorded is not None:
        return _promote(run_id, recorded, factory, promotion)
    output_dir = settings.artifacts_dir / model_name / str(run_id)
    try:
        result = train(base.path, output_dir, _run_progress(factory, run_id, progress))
        if trained_on:
            digests = sorted({text_digest(text) for text in trained_on})
            (result.output_dir / TRAINED_ON_FILE).write_text(json.dumps(digests))
        if held_out is not None and held_out.texts:  # what an int8 export is checked on
            held_out.to_jsonl(result.output_dir / HELD_OUT_FILE)
        extra = dict(extra_config(result)) if extra_config is not None else {}
        # Also for a candidate left for later: promoted by hand, it is judged the same way.
        if held_out is not None and held_out.texts and promotion is not PromotionPolicy.FORCE:
            same_data = _production_on(settings, factory, model_name, held_out, result)
            if same_data is not None:
                result.metrics["production_same_data"] = same_data
    except Exception as exc:
        ended = JobStatus.CANCELLED if isinstance(exc, JobCancelled) else JobStatus.FAILED
        with session_scope(factory) as session:
            run = session.get(TrainingRun, run_id)
            run.status, run.error, run.finished_at = ended, str(exc), utcnow()
        raise
    return _record(factory, run_id, model_name, base_reference, result, promotion, extra, task)


def _check_writable(folder: Path) -> None:
    """`OSError` naming the setting where model versions cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise OSError(
            f"cannot write model versions to {folder} (TEXTSUITE_ARTIFACTS_DIR): "
            f"{exc.strerror or exc}"
        ) from None


def _production_on(
    settings: Settings,
    factory: sessionmaker[Session],
    model_name: str,
    held_out: LabelledTexts,
    result: TrainingResult,
) -> dict[str, Any] | None:
    """Accuracy and F1 of the production classifier and of the new one (`result`) on the new
    one's held-out examples that production did not train on (a label production does not
    know counts as its miss); None without a production classifier, without a record of what
    it trained on, with no such examples, or when either cannot be loaded."""
    with factory() as session:
        current = versions.production_version(session, model_name)
        if current is None or current.task != "classification":
            return None
        folder, version_id, number = Path(current.artifact_path), current.id, current.version
    try:
        seen = set(json.loads((folder / TRAINED_ON_FILE).read_text()))
    except (OSError, ValueError):
        return None  # trained before versions kept it: compared on their own figures
    unseen = [i for i, text in enumerate(held_out.texts) if text_digest(text) not in seen]
    if not unseen:
        return None
    held_out = held_out.subset(unseen)
    figures = {}
    for role, where in (("production", folder), ("candidate", result.output_dir)):
        try:
            classifier = load_classifier(
                where,
                configured_placement(settings),
                folder_resolver(settings.model_cache_dir, factory),
            )
            probabilities = np.asarray(classifier.predict_proba(held_out.texts))
        except Exception as exc:  # the comparison falls back to the stored figures
            log.warning("cannot score %s %s on held-out examples: %s", model_name, role, exc)
            return None
        predicted = [classifier.labels[i] for i in probabilities.argmax(axis=1)]
        figures[role] = label_metrics(held_out.labels, predicted)
    return {"version_id": str(version_id), "version": number, "n_examples": len(unseen), **figures}


def _record(
    factory: sessionmaker[Session],
    run_id: uuid.UUID,
    model_name: str,
    base_reference: str,
    result: TrainingResult,
    promotion: PromotionPolicy,
    extra: Mapping[str, Any],
    task: str,
) -> RunOutcome:
    with session_scope(factory) as session:
        run = session.get(TrainingRun, run_id)
        run.status, run.progress, run.finished_at = JobStatus.SUCCEEDED, 1.0, utcnow()
        run.metrics, run.artifact_path = result.metrics, str(result.output_dir)
        run.params = result.params  # as resolved: the strategy `auto` chose, the learning rate
        version = versions.record_version(
            session,
            name=model_name,
            task=task,
            base_model=base_reference,
            artifact_path=result.output_dir,
            metrics=result.metrics,
            config={
                "architecture": result.architecture,
                "labels": result.labels,
                "primary_metric": result.primary_metric,
                **extra,
            },
            training_run=run,
        )
        session.expunge(version)
    return _promote(run_id, version, factory, promotion)


def _promote(
    run_id: uuid.UUID,
    version: ModelVersion,
    factory: sessionmaker[Session],
    promotion: PromotionPolicy,
) -> RunOutcome:
    promoted, note = False, "left as a candidate (promotion: never)"
    if promotion is not PromotionPolicy.NEVER:
        try:
            with session_scope(factory) as session:
                versions.promote(
                    session,
                    version.name,
                    version.version,
                    force=promotion is PromotionPolicy.FORCE,
                )
            promoted, note = True, "promoted to production"
        except versions.PromotionRefused as exc:
            note = str(exc)
    return RunOutcome(run_id, version.name, version.version, promoted, note, version.metrics)
