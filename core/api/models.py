"""`/v1/models`: list model versions, promote one to production, roll back (admin)."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session, sessionmaker

from core.api.deps import KEY_ERRORS, AdminKey, SessionDep, SessionFactoryDep, SettingsDep
from core.ml import versions
from core.ml.loading import ModelLoadError
from core.ml.serving import commit_if_loadable
from core.settings import Settings
from core.storage.models import ModelStage, ModelVersion

router = APIRouter(prefix="/v1/models", tags=["models"], responses=KEY_ERRORS)


class ModelVersionPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    version: int
    task: str
    stage: ModelStage
    base_model: str
    metrics: dict[str, Any]
    config: dict[str, Any]
    training_run_id: uuid.UUID | None
    created_at: dt.datetime
    promoted_at: dt.datetime | None


class Promotion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int | None = Field(
        default=None, ge=1, le=1_000_000_000, description="Default: the newest version"
    )
    force: bool = Field(default=False, description="Promote even if the metric is worse")


@router.get("", response_model=list[ModelVersionPublic], summary="Every model version")
def list_model_versions(session: SessionDep, _key: AdminKey) -> list[ModelVersion]:
    return versions.list_versions(session)


@router.get("/{name}", response_model=list[ModelVersionPublic], summary="The versions of one model")
def list_versions_of(name: str, session: SessionDep, _key: AdminKey) -> list[ModelVersion]:
    found = versions.list_versions(session, name)
    if not found:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no model named {name!r}")
    return found


class VersionComparisonPublic(BaseModel):
    name: str
    versions: list[int] = Field(description="The versions compared; every list below follows it")
    stages: list[str]
    primary_metric: str = Field(description="The metric promotion compares")
    metrics: dict[str, list[float | None]] = Field(description="Scalar validation metrics")
    per_class_f1: dict[str, list[float | None]] = Field(description="Classifiers: F1 per class")
    params: dict[str, list[Any]] = Field(description="Training parameters that differ")
    same_training_data: bool | None = Field(description="None: a version's run is unknown")
    notes: list[str]


@router.get(
    "/{name}/compare",
    response_model=VersionComparisonPublic,
    summary="Versions of a model side by side",
    responses={404: {"description": "no such model or version, or only one version"}},
)
def compare_versions(
    name: str,
    session: SessionDep,
    _key: AdminKey,
    versions_: Annotated[
        list[Annotated[int, Field(ge=1, le=versions.MAX_VERSION)]] | None,
        Query(
            alias="versions",
            max_length=versions.MAX_COMPARED,
            description="Versions to compare (repeat the parameter); default: production and "
            "the newest other version",
        ),
    ] = None,
) -> dict[str, Any]:
    """Validation metrics (and each class's F1) of two to ten versions, the training
    parameters that differ between them, and whether they were trained on the same data (if
    not, each was scored on different held-out examples, which the notes say)."""
    try:
        comparison = versions.compare(session, name, versions_)
    except versions.VersionNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, str(exc)) from None
    result = asdict(comparison)
    result["versions"] = result.pop("numbers")
    return result


@router.post(
    "/{name}/promote",
    response_model=ModelVersionPublic,
    summary="Promote a version to production",
    responses={
        409: {"description": "worse than production, or its files cannot be loaded"},
    },
)
def promote_version(
    name: str,
    body: Promotion,
    session: SessionDep,
    settings: SettingsDep,
    factory: SessionFactoryDep,
    _key: AdminKey,
) -> ModelVersion:
    """A version whose files are missing or damaged is refused (409): production is unchanged
    and goes on serving. `force` overrides a worse metric, never unloadable files."""
    try:
        promoted = versions.promote(session, name, body.version, force=body.force)
    except versions.VersionNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except versions.PromotionRefused as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    _commit_if_loadable(session, promoted, settings, factory)
    return promoted


@router.post(
    "/{name}/rollback",
    response_model=ModelVersionPublic,
    summary="Put the previous production version back",
    responses={
        404: {"description": "no model of that name"},
        409: {"description": "no earlier production version, or its files cannot be loaded"},
    },
)
def rollback_version(
    name: str,
    session: SessionDep,
    settings: SettingsDep,
    factory: SessionFactoryDep,
    _key: AdminKey,
) -> ModelVersion:
    try:
        restored = versions.rollback(session, name)
    except versions.UnknownModel as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except versions.VersionNotFound as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    _commit_if_loadable(session, restored, settings, factory)
    return restored


def _commit_if_loadable(
    session: Session, version: ModelVersion, settings: Settings, factory: sessionmaker[Session]
) -> None:
    try:
        commit_if_loadable(session, version, settings, factory)
    except ModelLoadError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
