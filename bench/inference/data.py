"""Benchmark inputs: Banking77 sentences from the shared data folder."""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def data_dir() -> Path:
    """`TEXTSUITE_DATA_DIR`, or `../shared/data` next to the repository."""
    configured = os.environ.get("TEXTSUITE_DATA_DIR")
    return Path(configured) if configured else (REPO_ROOT.parent / "shared" / "data").resolve()


def banking77(split: str, limit: int | None = None) -> tuple[list[str], list[str]]:
    """Texts and intent labels of a Banking77 split (`train` or `test`).

    The files are grouped by intent, so `limit` takes a seeded random sample, not the head.
    """
    path = data_dir() / "banking77" / f"{split}.csv"
    if not path.exists():
        raise SystemExit(
            f"Banking77 not found at {path}: set TEXTSUITE_DATA_DIR to the folder that holds "
            "banking77/ (see ../shared/data/README.md)"
        )
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if limit is not None and limit < len(rows):
        rows = random.Random(0).sample(rows, limit)
    return [row["text"] for row in rows], [row["category"] for row in rows]
