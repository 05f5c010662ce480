"""The production version of a named classifier, loaded once and swapped on promotion.

Workers and services ask `ProductionClassifier.current()` before each batch; it looks the
production version up at most every `refresh_s` seconds and loads a newly promoted one. A
version that fails to load is logged and the previous one keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import shutil
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from core.ml.batching import BatchingConfig, DynamicBatcher, retire_later
from core.ml.device import configured_placement
from core.ml.loading import Classifier, ModelLoadError, load_classifier, load_encoder
from core.ml.novelty import EXAMPLES_FILE, ExampleIndex
from core.ml.references import folder_resolver
from core.ml.training.data import HELD_OUT_FILE, LabelledTexts
from core.ml.versions import production_version
from core.settings import Settings
from core.storage.models import ModelVersion

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedVersion:
    version_id: uuid.UUID
    version: int
    classifier: Classifier
    config: dict[str, Any] = field(default_factory=dict)


INT8_FOLDER = "onnx-int8"
INT8_CHECK_FILE = "check.json"  # in the export's folder: how it compared with torch
INT8_CHECK_TEXTS = 1000  # held-out examples the check scores (1 point = 10 of them)


def load_for_serving(
    folder: Path, settings: Settings, factory: sessionmaker[Session] | None = None
) -> Classifier:
    """A model version's classifier as services run it: torch on the chosen device, or, with
    `TEXTSUITE_SERVE_INT8` on a CPU, its ONNX Runtime int8 export, where that export keeps the
    version's accuracy on its held-out examples within a point of torch fp32 (`int8_verdict`);
    otherwise torch, with a warning saying why."""
    placement = configured_placement(settings)
    resolve = folder_resolver(settings.model_cache_dir, factory)
    if not settings.serve_int8 or placement.device.type != "cpu":
        return load_classifier(folder, placement, resolve)
    verdict = int8_verdict(folder, resolve)
    if not verdict["acceptable"]:
        log.warning("%s: serving torch, not int8: %s", folder.name, verdict["summary"])
        return load_classifier(folder, placement, resolve)
    from core.ml.onnx import OnnxClassifier

    return OnnxClassifier.load(folder / INT8_FOLDER)


def int8_verdict(folder: Path, resolve: Callable[[str], Path] | None = None) -> dict[str, Any]:
    """Whether the version in `folder` may serve from its int8 export: `{"acceptable": bool,
    "summary": str}`. Made once: the export (`<folder>/onnx-int8`) is scored beside the torch
    fp32 model on up to `INT8_CHECK_TEXTS` of the version's held-out examples (spread over all
    of them: they are kept in class order) and refused when it loses more than a point of
    accuracy, or more than one example of a smaller set (`core.ml.onnx.verify_export`); the
    verdict is kept in the export's folder, which is written beside and renamed into place so
    concurrent processes never read half of one. A version without held-out examples (trained
    before versions kept them, or with none held out) is not exported: nothing could check
    it. An export or a check that fails refuses int8 for this load (torch serves) and leaves
    nothing behind."""
    exported = folder / INT8_FOLDER
    if (exported / INT8_CHECK_FILE).is_file():
        return dict(json.loads((exported / INT8_CHECK_FILE).read_text()))
    try:
        held_out = LabelledTexts.from_jsonl(folder / HELD_OUT_FILE)
    except (OSError, ValueError) as exc:
        return {
            "acceptable": False,
            "summary": f"no held-out examples to check an int8 export on ({exc}); versions "
            "trained with a validation share keep them",
        }
    from core.ml.onnx import export_classifier, verify_export

    count = min(len(held_out), INT8_CHECK_TEXTS)
    checked = held_out.subset(sorted(random.Random(0).sample(range(len(held_out)), count)))
    scratch = folder / f".{INT8_FOLDER}-{uuid.uuid4().hex}"
    try:
        if exported.is_dir():  # an export from before the check: check it where it is
            scratch.mkdir()
            source = exported
        else:
            export_classifier(folder, scratch, resolve_base=resolve)
            source = scratch
        agreement = verify_export(
            folder, source, checked.texts, gold=checked.labels, resolve_base=resolve
        )
        max_drop = max(0.01, 1.5 / max(count, 1))  # one example of a small set may flip
        verdict = {"acceptable": agreement.acceptable(max_drop), "summary": agreement.summary()}
        (scratch / INT8_CHECK_FILE).write_text(json.dumps(verdict))
        if source is exported:
            (scratch / INT8_CHECK_FILE).replace(exported / INT8_CHECK_FILE)
        else:
            with contextlib.suppress(OSError):  # another process finished first: theirs stays
                scratch.rename(exported)
        return verdict
    except Exception as exc:  # a model the exporter or the check cannot take
        log.exception("%s: cannot export or check int8", folder.name)
        return {"acceptable": False, "summary": f"int8 export or check failed: {exc!r}"}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def describe(classifier: object) -> str:
    """How a loaded classifier runs, for logs: backend, device, dtype and packing."""
    torch_model = getattr(classifier, "encoder", classifier)  # an encoder-head model's encoder
    placement = getattr(torch_model, "placement", None)
    if placement is None:
        return "ONNX Runtime int8 on cpu"
    dtype = str(torch_model.model.dtype).removeprefix("torch.")
    packed = ", packed batches" if getattr(classifier, "packs", False) else ""
    return f"torch {dtype} on {placement.device}{packed}"


def check_loads(
    version: ModelVersion, settings: Settings, factory: sessionmaker[Session] | None = None
) -> None:
    """Load a version's files as the services will, so that a missing or damaged artifact is
    refused when someone promotes it, not found by every service afterwards. Raises
    `ModelLoadError` saying what failed."""
    folder = Path(version.artifact_path)
    try:
        if version.task == "embedding":
            load_encoder(folder, configured_placement(settings))
        else:
            classifier = load_for_serving(folder, settings, factory)
            index = ExampleIndex.load(folder)
            if index is not None and not index.fits(classifier):
                raise ModelLoadError(
                    f"{folder / EXAMPLES_FILE} does not fit the model beside it (its examples "
                    "are not in this model's embedding space): retrain the version"
                )
    except ModelLoadError:
        raise
    except Exception as exc:  # safetensors, tokenizers and torch raise their own kinds
        raise ModelLoadError(
            f"cannot load {version.name} v{version.version} from {folder}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def commit_if_loadable(
    session: Session,
    version: ModelVersion,
    settings: Settings,
    factory: sessionmaker[Session] | None = None,
) -> None:
    """Commit a promotion or rollback of `version` only if its files load (`check_loads`);
    otherwise roll it back and raise `ModelLoadError`: production is unchanged."""
    try:
        check_loads(version, settings, factory)
    except ModelLoadError as exc:
        session.rollback()
        raise ModelLoadError(
            f"{version.name} v{version.version} was not put in production: {exc}. "
            "Production is unchanged."
        ) from exc
    session.commit()


class ProductionClassifier:
    """See the module docstring. Safe to share between threads."""

    def __init__(
        self,
        settings: Settings,
        factory: sessionmaker[Session],
        name: str,
        *,
        refresh_s: float = 5.0,
    ) -> None:
        self.settings, self.factory, self.name, self.refresh_s = settings, factory, name, refresh_s
        self._served: ServedVersion | None = None
        self._checked_at = -float("inf")
        self._lock = threading.Lock()
        self._load_error: str | None = None  # why the last version tried did not load

    def current(self, *, force: bool = False) -> ServedVersion | None:
        # Nothing served yet: wait for a load in progress (start-up's) rather than say none.
        fresh = time.monotonic() - self._checked_at < self.refresh_s
        if not force and fresh and self._served is not None:
            return self._served
        with self._lock:
            if not force and time.monotonic() - self._checked_at < self.refresh_s:
                return self._served
            self._checked_at = time.monotonic()
            found = self._lookup()
            if found is None or (self._served and self._served.version_id == found[0]):
                return self._served
            version_id, number, folder, config = found
            try:
                classifier = load_for_serving(folder, self.settings, self.factory)
            except Exception as exc:  # keep serving what we have; a person must fix the files
                log.exception("cannot load %s v%d; keeping the current version", self.name, number)
                self._load_error = f"cannot load v{number}: {type(exc).__name__}: {exc}"
                return self._served
            self._served, self._load_error = (
                ServedVersion(version_id, number, classifier, config),
                None,
            )
            log.info("serving %s v%d (%s)", self.name, number, describe(classifier))
            return self._served

    def not_serving(self) -> str | None:
        """For readiness, without waiting: None while a version is served; otherwise why not
        (the last load's error), trying the load again in the background when it is due (as a
        request would), so that a fixed model makes the process ready again."""
        if self._served is not None:
            return None
        if not self._lock.acquire(blocking=False):
            return "loading"
        self._lock.release()
        threading.Thread(target=self.current, name=f"load-{self.name}", daemon=True).start()
        return self._load_error or "not loaded yet"

    def _lookup(self) -> tuple[uuid.UUID, int, Path, dict[str, Any]] | None:
        try:
            with self.factory() as session:
                version = production_version(session, self.name)
                if version is None:
                    return None
                folder = Path(version.artifact_path)
                return version.id, version.version, folder, dict(version.config)
        except SQLAlchemyError as exc:  # readiness reports the database; keep serving
            log.warning("cannot look up the production %s model: %s", self.name, exc)
            return None


class ServingBatcher:
    """A served version's classifier behind a `DynamicBatcher`, for code that runs in threads
    of a process with an event loop (request handlers under `asyncio.to_thread`, periodic
    work): `predict(served, texts)` queues the texts with every other caller's and blocks
    until their rows are back, so concurrent requests share model calls, and a full queue
    raises `Overloaded` (a 503 with Retry-After). Texts that fill a model call by themselves
    (`max_batch_size` or more) run directly, as does a call from the loop's own thread.

    One batcher, for the version served last: a version loaded since (a promotion, or a
    rollback) gets its own, and the one it replaces stops once it has answered what it holds
    (`retire`); a caller still holding a replaced version calls its model directly. `start`
    and `stop` from the app's lifespan."""

    def __init__(self, config: BatchingConfig, name: str) -> None:
        self.config, self.name = config, name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._current: tuple[ServedVersion, DynamicBatcher[str]] | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._replaced: deque[ServedVersion] = deque(maxlen=8)  # compared by identity

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    async def stop(self) -> None:
        self._loop = None
        if self._current is not None:
            await self._current[1].stop()
            self._current = None
        if self._retiring:
            await asyncio.wait(self._retiring)

    def predict(self, served: ServedVersion, texts: Sequence[str]) -> np.ndarray:
        """(N, C) probabilities of `texts`, as `served.classifier.predict_proba` gives them."""
        loop = self._loop
        whole = len(texts) >= min(self.config.max_batch_size, self.config.max_queue)
        if loop is not None and not whole and not _on_loop(loop):
            rows = asyncio.run_coroutine_threadsafe(self._submit(served, list(texts)), loop)
            batched = rows.result()
            if batched is not None:
                return batched
        return np.asarray(served.classifier.predict_proba(list(texts)))

    async def _submit(self, served: ServedVersion, texts: list[str]) -> np.ndarray | None:
        """The rows from the batcher of `served`, or None for a replaced version (its caller
        runs the model itself)."""
        # On the loop, with no suspension between reading `_current` and queueing the texts
        # (`start` and `submit_many`'s queueing do not suspend), so nothing queues on a batcher
        # after it has been replaced.
        current = self._current
        if current is None or current[0] is not served:
            if any(replaced is served for replaced in self._replaced):
                return None
            batcher = DynamicBatcher.for_predictor(
                served.classifier, self.config, name=f"{self.name}-v{served.version}"
            )
            await batcher.start()
            self._current = current_now = (served, batcher)
            if current is not None:
                self._replaced.append(current[0])
                retire_later(current[1], self._retiring)
            current = current_now
        return await current[1].submit_many(texts)


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
