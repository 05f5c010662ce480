"""Replaying a JSONL file of articles (one `ArticleIn` object per line) into the monitor."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import ValidationError

from apps.sentiment.articles import ArticleIn
from core.validation import problems


class ReplayFileError(ValueError):
    """Lines of a replay file that are not articles; nothing was sent."""

    def __init__(self, path: Path, errors: list[str]) -> None:
        shown = "\n  ".join(errors[:20])
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        super().__init__(f"{path}: {len(errors)} invalid line(s):\n  {shown}{more}")
        self.errors = errors


def read_articles(path: Path) -> list[ArticleIn]:
    """Every article in the file; any bad line fails the whole file, naming each bad line."""
    articles: list[ArticleIn] = []
    errors: list[str] = []
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                articles.append(ArticleIn.model_validate(json.loads(line)))
            except json.JSONDecodeError as exc:
                errors.append(f"line {number}: not JSON ({exc.msg})")
            except ValidationError as exc:
                errors.append(f"line {number}: {problems(exc, 'article')}")
    if errors:
        raise ReplayFileError(path, errors)
    return articles


def replay(
    articles: Sequence[ArticleIn],
    send: Callable[[Sequence[ArticleIn]], object],
    *,
    batch_size: int = 64,
    on_batch: Callable[[int], None] | None = None,
) -> int:
    """Send the articles in batches (to the stream, or straight to the ingestor)."""
    sent = 0
    for start in range(0, len(articles), batch_size):
        chunk = articles[start : start + batch_size]
        send(chunk)
        sent += len(chunk)
        if on_batch is not None:
            on_batch(len(chunk))
    return sent
