"""Model references: one resolver from what a user writes to a local folder.

A reference may be, tried in this order:
1. a model that ships in an installed package (`all-MiniLM-L6-v2`, alias `minilm`, ...);
2. a local folder in Hugging Face / sentence-transformers format;
3. a model version in the database: `name` (its production version), `name@3`,
   `name@production`;
4. a Hugging Face Hub id already in the local cache (never downloaded at run time).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.ml.packaged import ALIASES, PACKAGED_MODELS, PackageMissing
from core.storage.models import ModelStage, ModelVersion


class ModelNotFound(LookupError):
    """Nothing matched a reference; the message lists every place that was looked at."""


@dataclass(frozen=True)
class ResolvedModel:
    reference: str
    path: Path
    source: str  # "package", "folder", "version" or "hub-cache"
    version_id: str | None = None


def resolve_model(
    reference: str,
    *,
    cache_dir: Path,
    session_factory: sessionmaker[Session] | None = None,
) -> ResolvedModel:
    """Find the folder for `reference`, or raise `ModelNotFound` saying what was tried."""
    tried: list[str] = []
    name = ALIASES.get(reference, reference)
    if name in PACKAGED_MODELS:
        try:
            return ResolvedModel(reference, PACKAGED_MODELS[name](cache_dir), "package")
        except PackageMissing as exc:
            tried.append(f"packaged model {name!r}: {exc}")

    folder = Path(reference).expanduser()
    if folder.is_dir():
        if (folder / "config.json").exists() or (folder / "adapter_config.json").exists():
            return ResolvedModel(reference, folder.resolve(), "folder")
        tried.append(f"folder {folder}: has no config.json or adapter_config.json")
    else:
        tried.append(f"folder {folder}: does not exist")

    if session_factory is not None:
        version = _find_version(session_factory, reference)
        if version is not None:
            path = Path(version.artifact_path)
            if not path.is_dir():
                raise ModelNotFound(
                    f"model version {version.name}@{version.version} points at {path}, which is "
                    "missing: restore the artifacts folder or promote another version"
                )
            return ResolvedModel(reference, path, "version", str(version.id))
        tried.append(f"model version {reference!r}: no such version in the database")

    cached = _hub_cache(reference)
    if cached is not None:
        return ResolvedModel(reference, cached, "hub-cache")
    tried.append(f"Hugging Face cache {reference!r}: not downloaded (no downloads at run time)")

    packaged = ", ".join(sorted(PACKAGED_MODELS))
    raise ModelNotFound(
        f"unknown model {reference!r}. Looked for:\n  - " + "\n  - ".join(tried) + "\n"
        f"Use a packaged model ({packaged}), a local Hugging Face folder, a trained version "
        "(`textsuite models list`), or download the Hub model beforehand."
    )


def _find_version(factory: sessionmaker[Session], reference: str) -> ModelVersion | None:
    name, _, which = reference.partition("@")
    query = select(ModelVersion).where(ModelVersion.name == name)
    if which in ("", "production"):
        query = query.where(ModelVersion.stage == ModelStage.PRODUCTION)
    elif which.isdigit():
        query = query.where(ModelVersion.version == int(which))
    else:
        return None
    with factory() as session:
        return session.scalars(query).first()


def _hub_cache(reference: str) -> Path | None:
    if reference.count("/") != 1 or reference.startswith((".", "/", "~")):
        return None
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(reference, local_files_only=True))
    except (LocalEntryNotFoundError, ValueError, OSError):
        return None


def folder_resolver(
    cache_dir: Path, session_factory: sessionmaker[Session] | None = None
) -> Callable[[str], Path]:
    """`reference -> folder`, for loaders that meet references inside model folders (the base
    model under a LoRA adapter)."""

    def resolve(reference: str) -> Path:
        return resolve_model(reference, cache_dir=cache_dir, session_factory=session_factory).path

    return resolve
