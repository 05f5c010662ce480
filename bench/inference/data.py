"""Benchmark inputs: Banking77 sentences from the shared data folder."""

from __future__ import annotations

import csv
import random

from bench.common import banking77_path


def banking77(split: str, limit: int | None = None) -> tuple[list[str], list[str]]:
    """Texts and intent labels of a Banking77 split (`train` or `test`).

    The files are grouped by intent, so `limit` takes a seeded random sample, not the head.
    """
    with banking77_path(split).open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if limit is not None and limit < len(rows):
        rows = random.Random(0).sample(rows, limit)
    return [row["text"] for row in rows], [row["category"] for row in rows]
