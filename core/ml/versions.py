"""Model versions: record what training produced, promote the best, roll back a bad one.

Each model name (e.g. `support-intents`) has numbered versions; at most one is in
`production` (the database enforces it). Promotion compares the candidate's validation metric
with production's and refuses a worse one unless forced — so automatic promotion after a
scheduled retrain can never make things worse.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from core.storage.base import utcnow
from core.storage.models import ModelStage, ModelVersion, TrainingRun


class PromotionRefused(RuntimeError):
    """The candidate is worse than production on the validation metric."""


class VersionNotFound(LookupError):
    pass


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


def production_version(session: Session, name: str) -> ModelVersion | None:
    return session.scalars(
        select(ModelVersion).where(
            ModelVersion.name == name, ModelVersion.stage == ModelStage.PRODUCTION
        )
    ).first()


def production_files_check(factory: sessionmaker[Session], name: str) -> Callable[[], None]:
    """A readiness check: the production version of `name` has its files where it says on this
    machine. Versions are saved by whichever worker trained them, so on a machine that does not
    share the artifacts folder they are missing, and the process could not serve them."""

    def check() -> None:
        with factory() as session:
            version = production_version(session, name)
            if version is None:
                return  # nothing trained yet: nothing to load
            number, folder = version.version, Path(version.artifact_path)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{name} v{number}: no model files at {folder} on this machine "
                "(TEXTSUITE_ARTIFACTS_DIR must be a folder every machine shares)"
            )

    return check


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

    Refuses, with `PromotionRefused`, a candidate whose primary validation metric is below
    production's — unless `force`. The replaced version is archived, ready for `rollback`.
    """
    candidate = get_version(session, name, version)
    current = production_version(session, name)
    if current is not None and current.id == candidate.id:
        return candidate
    if current is not None and not force:
        metric, new = _metric(candidate)
        _, old = _metric(current)
        if old is not None and (new is None or new < old):
            raise PromotionRefused(
                f"{name} v{candidate.version} has {metric} {_fmt(new)}, worse than production "
                f"v{current.version} ({_fmt(old)}); pass force to promote it anyway"
            )
    if current is not None:
        current.stage = ModelStage.ARCHIVED
        session.flush()  # free the one-production slot before taking it
    candidate.stage = ModelStage.PRODUCTION
    candidate.promoted_at = utcnow()
    session.flush()
    return candidate


def rollback(session: Session, name: str) -> ModelVersion:
    """Put back the version that was in production before the current one."""
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


def _fmt(value: float | None) -> str:
    return "missing" if value is None else f"{value:.4f}"
