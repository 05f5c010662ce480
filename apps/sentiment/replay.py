"""Replaying a JSONL file of articles (one `ArticleIn` object per line) into the monitor."""

from __future__ import annotations

import contextlib
import itertools
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from pydantic import ValidationError

from apps.sentiment.articles import ArticleIn
from core.validation import problems, strict_json_loads


class ReplayFileError(ValueError):
    """Lines of a replay file that are not articles; nothing was sent."""

    def __init__(self, path: Path, errors: list[str]) -> None:
        shown = "\n  ".join(errors[:20])
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        super().__init__(f"{path}: {len(errors)} invalid line(s):\n  {shown}{more}")
        self.errors = errors


def check_articles(path: Path) -> int:
    """How many articles the file holds; any bad line fails the whole file (`ReplayFileError`
    naming each bad line). Reads one line at a time: memory stays flat however long the file."""
    count = 0
    errors: list[str] = []
    for number, line in _lines(path):
        try:
            ArticleIn.model_validate(strict_json_loads(line))
            count += 1
        except ValidationError as exc:
            errors.append(f"line {number}: {problems(exc, 'article')}")
        except ValueError as exc:
            errors.append(f"line {number}: not JSON the monitor can store ({exc})")
    if errors:
        raise ReplayFileError(path, errors)
    return count


def iter_articles(path: Path) -> Iterator[ArticleIn]:
    """The file's articles one at a time (check it with `check_articles` first)."""
    for _, line in _lines(path):
        yield ArticleIn.model_validate(strict_json_loads(line))


def read_articles(path: Path) -> list[ArticleIn]:
    """Every article in the file, checked first (a small file: `iter_articles` streams)."""
    check_articles(path)
    return list(iter_articles(path))


@contextlib.contextmanager
def readable_twice(path: Path) -> Iterator[Path]:
    """`path` itself when it is a regular file; a pipe or `/dev/stdin`, which reads once, is
    copied to a temporary file first (removed afterwards) for `check_articles` and then
    `iter_articles` to read."""
    if Path(path).is_file():
        yield Path(path)
        return
    with tempfile.TemporaryDirectory(prefix="textsuite-replay-") as folder:
        copy = Path(folder) / "articles.jsonl"
        with Path(path).open("rb") as source, copy.open("wb") as target:
            shutil.copyfileobj(source, target)
        yield copy


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield number, line


def replay(
    articles: Iterable[ArticleIn],
    send: Callable[[Sequence[ArticleIn]], object],
    *,
    batch_size: int = 64,
    on_batch: Callable[[int], None] | None = None,
) -> int:
    """Send the articles in batches (to the stream, or straight to the ingestor), holding one
    batch at a time."""
    sent = 0
    iterator = iter(articles)
    while chunk := list(itertools.islice(iterator, batch_size)):
        send(chunk)
        sent += len(chunk)
        if on_batch is not None:
            on_batch(len(chunk))
    return sent
