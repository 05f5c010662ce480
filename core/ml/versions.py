"""Model versions: record what training produced, promote the best, roll back a bad one.

Each model name (e.g. `support-intents`) has numbered versions; at most one is in
`production` (the database enforces it). Promotion compares the candidate's validation metric
with production's and refuses a worse one unless forced — so automatic promotion after a
scheduled retrain can never make things worse.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from core.ml.training.arguments import LOWER_IS_BETTER
from core.storage.base import utcnow
from core.storage.models import ModelStage, ModelVersion, TrainingRun


class PromotionRefused(RuntimeError):
    """The candidate is worse than production on the validation metric."""


class VersionNotFound(LookupError):
    pass


class UnknownModel(VersionNotFound):
    """No version of any stage has this model name."""


def list_versions(session: Session, name: str | None = None) -> list[ModelVersion]:
    query = select(ModelVersion).order_by(ModelVersion.name, ModelVersion.version.desc())
    if name is not None:
        query = query.where(ModelVersion.name == name)
    return list(session.scalars(query))


def get_version(session: Session, name: str, version: int | None = None) -> ModelVersion:
    """A version by number, or the newest when `version` is None."""
    query = select(ModelVersion).where(ModelVersion.name == name)
    if version is None:
        query = query.order_by(ModelVersion.version.desc())
    else:
        query = query.where(ModelVersion.version == version)
    found = session.scalars(query).first()
    if found is None:
        known = ", ".join(f"v{v.version}" for v in list_versions(session, name))
        if not known:
            raise VersionNotFound(f"model {name!r} has no versions: train it first")
        raise VersionNotFound(f"model {name!r} has no v{version} (versions: {known})")
    return found


def version_names(session: Session, ids: Iterable[uuid.UUID | None]) -> dict[uuid.UUID, str]:
    """`<model> v<n>` for each id that is a version (a deleted one's is left out), in model
    name and version order: what reports name a version by."""
    wanted = {found for found in ids if found is not None}
    rows = session.execute(
        select(ModelVersion.id, ModelVersion.name, ModelVersion.version)
        .where(ModelVersion.id.in_(wanted))
        .order_by(ModelVersion.name, ModelVersion.version)
    ).all()
    return {version_id: f"{name} v{number}" for version_id, name, number in rows}


def production_version(session: Session, name: str) -> ModelVersion | None:
    return session.scalars(
        select(ModelVersion).where(
            ModelVersion.name == name, ModelVersion.stage == ModelStage.PRODUCTION
        )
    ).first()


def still_production(session: Session, version_id: uuid.UUID) -> bool:
    """Whether the version is production; where the database locks rows (PostgreSQL), its
    row stays share-locked until the transaction ends, so a promotion or rollback (which
    updates it) waits for what the caller writes under it."""
    locked = (
        select(ModelVersion.id)
        .where(ModelVersion.id == version_id, ModelVersion.stage == ModelStage.PRODUCTION)
        .with_for_update(read=True)
    )
    return session.scalar(locked) is not None


def production_files_check(
    factory: sessionmaker[Session],
    name: str,
    not_serving: Callable[[], str | None] | None = None,
    untrained: str = "none trained yet",
) -> Callable[[], str | None]:
    """A readiness check: the production version of `name` has its files where it says on this
    machine. Versions are saved by whichever worker trained them, so on a machine that does not
    share the artifacts folder they are missing, and the process could not serve them.

    `not_serving()`, where the process serves the model itself, loads it if it has not (or
    tries again) and says why no version is served, or None when one is: a process that cannot
    load its model is not ready either. With no version trained yet the process is ready (it
    serves everything else) and the check says so, with `untrained`: what that means here."""

    def check() -> str | None:
        with factory() as session:
            version = production_version(session, name)
            if version is None:
                return untrained
            number, folder = version.version, Path(version.artifact_path)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{name} v{number}: no model files at {folder} on this machine "
                "(TEXTSUITE_ARTIFACTS_DIR must be a folder every machine shares)"
            )
        reason = not_serving() if not_serving is not None else None
        if reason is not None:
            raise ModelNotServed(f"{name} v{number}: {reason}")
        return None

    return check


class ModelNotServed(RuntimeError):
    """The process has no version of a model loaded (readiness)."""


def record_version(
    session: Session,
    *,
    name: str,
    task: str,
    base_model: str,
    artifact_path: Path,
    metrics: Mapping[str, Any],
    config: Mapping[str, Any],
    training_run: TrainingRun | None = None,
) -> ModelVersion:
    """Store a new candidate version (numbered after the newest); idempotent per training run."""
    if training_run is not None:
        existing = session.scalars(
            select(ModelVersion).where(ModelVersion.training_run_id == training_run.id)
        ).first()
        if existing is not None:
            return existing
    newest = session.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.name == name))
    version = ModelVersion(
        name=name,
        version=(newest or 0) + 1,
        task=task,
        base_model=base_model,
        artifact_path=str(artifact_path),
        metrics=dict(metrics),
        config=dict(config),
        stage=ModelStage.CANDIDATE,
        training_run_id=training_run.id if training_run else None,
    )
    session.add(version)
    session.flush()
    return version


def _metric(version: ModelVersion) -> tuple[str, float | None]:
    name = version.config.get("primary_metric", "macro_f1")
    value = version.metrics.get(name)
    return name, float(value) if isinstance(value, int | float) else None


def promote(
    session: Session, name: str, version: int | None = None, *, force: bool = False
) -> ModelVersion:
    """Make a version production (the newest when `version` is None).

    Refuses, with `PromotionRefused`, a candidate whose primary validation metric is worse
    than production's — unless `force`. Where the candidate's run scored both on its held-out
    examples that production did not train on (`production_same_data`, for this production
    version), those two figures are compared; otherwise each version's own validation figure.
    A first version whose run also measured its base model on the same held-out data (an
    encoder's `base_mrr`) is refused when worse than that base, which serves until then.
    The replaced version is archived, ready for `rollback`.
    """
    candidate = get_version(session, name, version)
    current = production_version(session, name)
    if current is not None and current.id == candidate.id:
        return candidate
    if current is None and not force:
        metric, new = _metric(candidate)
        base = candidate.metrics.get(f"base_{metric}")
        lower = metric in LOWER_IS_BETTER
        if (
            isinstance(base, int | float)
            and new is not None
            and (new > base if lower else new < base)
        ):
            raise PromotionRefused(
                f"{name} v{candidate.version} has {metric} {_fmt(new)}, worse than its base model "
                f"{candidate.base_model} ({_fmt(float(base))}) on the same held-out data; force "
                "promotes it anyway (`--force`, or `force: true`)"
            )
    if current is not None and not force:
        metric, new = _metric(candidate)
        _, old = _metric(current)
        on = ""
        same = candidate.metrics.get("production_same_data")
        if isinstance(same, dict) and same.get("version_id") == str(current.id):
            both = [(same.get(role) or {}).get(metric) for role in ("candidate", "production")]
            if all(isinstance(value, int | float) for value in both):
                new, old = (float(value) for value in both)
                count = same.get("n_examples")
                on = f" on {count} held-out examples v{current.version} did not train on"
        lower = metric in LOWER_IS_BETTER  # nll, ece, loss
        if old is not None and (new is None or (new > old if lower else new < old)):
            raise PromotionRefused(
                f"{name} v{candidate.version} has {metric} {_fmt(new)}, worse than production "
                f"v{current.version} ({_fmt(old)}{on}); force promotes it anyway "
                "(`--force`, or `force: true`)"
            )
    if current is not None:
        current.stage = ModelStage.ARCHIVED
        session.flush()  # free the one-production slot before taking it
    candidate.stage = ModelStage.PRODUCTION
    candidate.promoted_at = utcnow()
    session.flush()
    return candidate


def rollback(session: Session, name: str) -> ModelVersion:
    """Put back the version that was in production before the current one (`UnknownModel`
    for a name with no versions at all)."""
    if session.scalar(select(ModelVersion.id).where(ModelVersion.name == name).limit(1)) is None:
        raise UnknownModel(f"no model named {name!r}")
    current = production_version(session, name)
    previous = session.scalars(
        select(ModelVersion)
        .where(
            ModelVersion.name == name,
            ModelVersion.stage == ModelStage.ARCHIVED,
            ModelVersion.promoted_at.is_not(None),
        )
        .order_by(ModelVersion.promoted_at.desc())
    ).first()
    if previous is None:
        raise VersionNotFound(f"model {name!r} has no earlier production version to roll back to")
    if current is not None:
        current.stage = ModelStage.ARCHIVED
        # Keep the bad version out of the next rollback: it was never production "before".
        current.promoted_at = None
        session.flush()
    previous.stage = ModelStage.PRODUCTION
    previous.promoted_at = utcnow()
    session.flush()
    return previous


MAX_COMPARED = 10
MAX_VERSION = 1_000_000_000


@dataclass(frozen=True)
class VersionComparison:
    """Versions of one model side by side, each list in `numbers`' order: the scalar metrics,
    each class's F1 (classifiers), the training parameters that differ, and whether they
    were trained on the same data."""

    name: str
    numbers: list[int]
    stages: list[str]
    primary_metric: str
    metrics: dict[str, list[float | None]]
    per_class_f1: dict[str, list[float | None]]
    params: dict[str, list[Any]]
    same_training_data: bool | None  # None: a version has no training run on record
    notes: list[str]

    def largest_class_changes(self, limit: int) -> list[tuple[str, float]]:
        """The classes whose F1 moved most from the first version to the last."""
        changes = [
            (label, values[-1] - values[0])
            for label, values in self.per_class_f1.items()
            if values[0] is not None and values[-1] is not None
        ]
        return sorted(changes, key=lambda change: (-abs(change[1]), change[0]))[:limit]


def default_comparison(session: Session, name: str) -> list[int]:
    """Production and the newest other version (a retrained candidate against what serves);
    without a production version, the two newest."""
    numbers = [version.version for version in list_versions(session, name)]  # newest first
    current = production_version(session, name)
    if len(numbers) < 2:
        raise VersionNotFound(
            f"model {name!r} has {len(numbers)} version(s): nothing to compare it with"
        )
    if current is None:
        return [numbers[1], numbers[0]]
    newest_other = next(number for number in numbers if number != current.version)
    return [current.version, newest_other]


def compare(session: Session, name: str, numbers: Sequence[int] | None = None) -> VersionComparison:
    """Versions `numbers` of `name` (default: `default_comparison`) side by side.

    Each version's metrics were measured on its own run's held-out examples: versions trained
    on different data were scored on different examples too, which the notes say."""
    numbers = list(numbers) if numbers else default_comparison(session, name)
    if len(set(numbers)) != len(numbers) or not 2 <= len(numbers) <= MAX_COMPARED:
        raise ValueError(f"compare 2 to {MAX_COMPARED} different versions, got {numbers}")
    if not all(1 <= number <= MAX_VERSION for number in numbers):
        raise ValueError(f"version numbers run from 1 to {MAX_VERSION}, got {numbers}")
    found = [get_version(session, name, number) for number in numbers]
    runs = [
        session.get(TrainingRun, version.training_run_id) if version.training_run_id else None
        for version in found
    ]
    primary = found[0].config.get("primary_metric", "macro_f1")
    metric_names = sorted(
        {key for version in found for key, value in version.metrics.items() if _is_number(value)}
    )
    labels = sorted({label for version in found for label in version.metrics.get("per_class", {})})
    notes = []
    fingerprints = {run.data_fingerprint for run in runs if run is not None}
    same_data = None if None in runs else len(fingerprints) == 1
    if same_data is False:
        notes.append(
            "trained on different data, so each was scored on different held-out examples: "
            "for a like-for-like score, evaluate each version on one labelled file "
            "(`textsuite eval ... --version N`)"
        )
    if same_data is None:
        notes.append("a version has no training run on record: its data is unknown")
    if len({version.base_model for version in found}) > 1:
        notes.append("the versions were tuned from different base models")
    return VersionComparison(
        name=name,
        numbers=numbers,
        stages=[version.stage.value for version in found],
        primary_metric=primary,
        metrics={key: [_number(v.metrics.get(key)) for v in found] for key in metric_names},
        per_class_f1={
            label: [_number(v.metrics.get("per_class", {}).get(label, {}).get("f1")) for v in found]
            for label in labels
        },
        params=_differing_params(runs),
        same_training_data=same_data,
        notes=notes,
    )


def _differing_params(runs: Sequence[TrainingRun | None]) -> dict[str, list[Any]]:
    params = [run.params if run is not None else {} for run in runs]
    keys = sorted({key for each in params for key in each})
    return {
        key: [each.get(key) for each in params]
        for key in keys
        if any(each.get(key) != params[0].get(key) for each in params)
    }


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(value: object) -> float | None:
    return float(value) if _is_number(value) else None  # type: ignore[arg-type]


def _fmt(value: float | None) -> str:
    return "missing" if value is None else f"{value:.4f}"
