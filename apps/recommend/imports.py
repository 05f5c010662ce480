"""Bulk files of items or events: JSON Lines or CSV, checked whole before anything is stored.

JSONL: one object per line with the fields of the API (`ItemIn`, `EventIn`). CSV: a header
row naming those fields; for items, `tags` is `|`-separated, `active` is true/false, and any
column that is not an item field becomes an attribute. Every bad line is reported with its
number and what is wrong; a file with any bad line stores nothing.

A file may be of any length (a catalogue of millions of items, a behaviour log):
`import_item_file` and `import_event_file` read it in chunks, twice (check everything, then
store a chunk per transaction), so an import holds one chunk in memory, not the file. What
the check cannot see (an event id reused across chunks, a file changed between the passes)
stops the second pass with the chunks before it stored, and the error says how many.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, Generic, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from apps.recommend.catalogue import (
    ItemChange,
    ItemIn,
    UntitledNewItems,
    UpsertReport,
    upsert_items,
)
from apps.recommend.events import (
    EventIn,
    EventRejected,
    EventReport,
    RatingScale,
    record_events,
)
from core.storage.engine import session_scope
from core.validation import UnfitJson, problems, strict_json_loads

M = TypeVar("M", bound=BaseModel)
R = TypeVar("R")
# Told after each chunk which pass runs ("checking", "storing") and the share of the file read.
ImportProgress = Callable[[str, float], None]
MAX_ERRORS = 50


class FileFormat(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"


class ImportFileError(ValueError):
    """Lines of an import file that are wrong: `errors` is [(line number, message)], the
    first `MAX_ERRORS` of `count` (default: all of them); the file's first `stored` records
    were stored before they were found (`import_item_file`, `import_event_file`)."""

    def __init__(
        self, errors: list[tuple[int, str]], *, count: int | None = None, stored: int = 0
    ) -> None:
        self.errors = errors[:MAX_ERRORS]
        self.stored = stored
        count = len(errors) if count is None else count
        listed = "; ".join(f"line {line}: {message}" for line, message in self.errors[:10])
        more = f" (and {count - 10} more)" if count > 10 else ""
        done = (
            f"the file's first {stored} record(s) are stored (importing the fixed file again "
            "stores the rest; what is stored already counts as unchanged or duplicate)"
            if stored
            else "nothing imported"
        )
        super().__init__(f"{count} bad line(s), {done}: {listed}{more}")


def detect_format(filename: str | None, content_type: str | None, data: bytes) -> FileFormat:
    name, kind = (filename or "").lower(), (content_type or "").lower()
    if name.endswith((".jsonl", ".ndjson", ".json")) or "json" in kind:
        return FileFormat.JSONL
    if name.endswith(".csv") or "csv" in kind:
        return FileFormat.CSV
    return FileFormat.JSONL if data.lstrip()[:1] == b"{" else FileFormat.CSV


@dataclass(frozen=True)
class FileChunk(Generic[M]):
    """The records of (a chunk of) a file that could be read, each with the line it was read
    from, and the lines that could not (line number, why)."""

    records: list[M]
    lines: list[int]
    errors: list[tuple[int, str]]

    def rejected(self, exc: EventRejected | None = None) -> list[tuple[int, str]]:
        """The bad lines: those that could not be read, and the events `record_events`
        refused (`exc`), named by their lines."""
        refused = [(self.lines[i], why) for i, why in exc.problems.items()] if exc else []
        return sorted([*self.errors, *refused])


def event_chunks(
    handle: BinaryIO, file_format: FileFormat, size: int | None
) -> Iterator[FileChunk[EventIn]]:
    """The file's events and bad lines, `size` events at a time (None: all in one)."""
    return _chunks(_rows(handle, file_format, _event_row), EventIn, size)


def item_chunks(
    handle: BinaryIO, file_format: FileFormat, size: int | None
) -> Iterator[FileChunk[ItemIn]]:
    """The file's items and bad lines, `size` items at a time (None: all in one)."""
    return _chunks(_rows(handle, file_format, _item_row), ItemIn, size)


def _chunks(
    rows: Iterator[tuple[int, Any]], model: type[M], size: int | None
) -> Iterator[FileChunk[M]]:
    """Records and bad lines, `size` records at a time, read as they are needed; one chunk
    (with an error) for a file that holds no records. A line that is not UTF-8 raises
    `ImportFileError` when it is reached."""
    records: list[M] = []
    lines: list[int] = []
    errors: list[tuple[int, str]] = []
    empty = True
    for number, record in _each(rows, model):
        empty = False
        if isinstance(record, str):
            errors.append((number, record))
        else:
            records.append(record)
            lines.append(number)
        if size is not None and len(records) + len(errors) >= size:
            yield FileChunk(records, lines, errors)
            records, lines, errors = [], [], []
    if empty:
        errors.append((1, "the file holds no records"))
    if records or errors or empty:
        yield FileChunk(records, lines, errors)


def import_item_file(
    factory: sessionmaker[Session],
    source: Path | bytes,
    *,
    size: int,
    file_format: FileFormat | None = None,
    progress: ImportProgress | None = None,
) -> UpsertReport:
    """Add or update the items of a file (a path, or an upload's bytes) of any length, `size`
    at a time: a first pass reads the whole file, and any bad line raises `ImportFileError`
    naming them with nothing stored; the second upserts it a chunk per transaction. An item
    repeated further on updates the earlier one (the last wins) and counts once, as what it
    went through: created, updated or unchanged."""
    opened, file_format, length = _source(source, file_format)
    found = _Found()
    with opened() as handle:
        for chunk in item_chunks(handle, file_format, size):
            found.add(chunk.errors)
            _told(progress, "checking", handle, length)
    found.check()
    changes: dict[str, ItemChange] = {}  # each item once, however often the file repeats it
    to_embed: dict[uuid.UUID, None] = {}
    stored = 0  # records (lines) of the file
    with opened() as handle:
        for chunk in item_chunks(handle, file_format, size):
            if chunk.errors:  # the file changed since the first pass
                raise ImportFileError(chunk.errors, stored=stored)
            try:
                report = _stored_once(factory, partial(upsert_items, items=chunk.records))
            except UntitledNewItems as exc:
                new = set(exc.external_ids)
                raise ImportFileError(
                    [
                        (line, "a new item needs a title")
                        for line, record in zip(chunk.lines, chunk.records, strict=True)
                        if record.external_id in new
                    ],
                    stored=stored,
                ) from None
            stored += len(chunk.records)
            for external_id, change in report.changes.items():
                changes[external_id] = max(change, changes.get(external_id, change))
            to_embed.update(dict.fromkeys(report.to_embed))
            _told(progress, "storing", handle, length)
    return UpsertReport(changes, list(to_embed))


def import_event_file(
    factory: sessionmaker[Session],
    source: Path | bytes,
    ratings: RatingScale,
    *,
    size: int,
    file_format: FileFormat | None = None,
    progress: ImportProgress | None = None,
) -> EventReport:
    """Store a file of events (a path, or an upload's bytes) of any length, `size` at a time;
    its format is detected where not given.

    A first pass reads the whole file and checks each chunk against the database (bad lines,
    unknown items, off-scale ratings, ids stored or reused for other events); any problem
    raises `ImportFileError` naming the bad lines, and nothing is stored. The second pass
    stores the file a chunk per transaction. What the first pass cannot see is an id given to
    two different events in different chunks: the second raises `ImportFileError` naming its
    line, with the chunks before it stored; the file, fixed, can be imported again (events
    already stored count as duplicates, not twice). Events with neither an id nor a time are
    stamped with one time for the whole file, as if it had come in one batch."""
    opened, file_format, length = _source(source, file_format)
    received = dt.datetime.now(dt.UTC)
    found = _Found()
    with opened() as handle:
        for chunk in event_chunks(handle, file_format, size):
            with factory() as session:
                try:
                    record_events(session, chunk.records, ratings, write=False, received=received)
                    found.add(chunk.errors)
                except EventRejected as exc:
                    found.add(chunk.rejected(exc))
            _told(progress, "checking", handle, length)
    found.check()
    stored = duplicates = 0
    with opened() as handle:
        for chunk in event_chunks(handle, file_format, size):
            if chunk.errors:  # the file changed since the first pass
                raise ImportFileError(chunk.errors, stored=stored + duplicates)
            try:
                store = partial(
                    record_events, events=chunk.records, ratings=ratings, received=received
                )
                report = _stored_once(factory, store)
            except EventRejected as exc:
                raise ImportFileError(chunk.rejected(exc), stored=stored + duplicates) from None
            stored, duplicates = stored + report.stored, duplicates + report.duplicates
            _told(progress, "storing", handle, length)
    return EventReport(stored=stored, duplicates=duplicates)


def _source(
    source: Path | bytes, file_format: FileFormat | None
) -> tuple[Callable[[], BinaryIO], FileFormat, int]:
    """How to open the file (again), its format (as given, or detected) and its size."""

    def opened() -> BinaryIO:
        return io.BytesIO(source) if isinstance(source, bytes) else source.open("rb")

    size = len(source) if isinstance(source, bytes) else source.stat().st_size
    if file_format is None:
        with opened() as handle:
            name = source.name if isinstance(source, Path) else None
            file_format = detect_format(name, None, handle.read(4096))
    return opened, file_format, size


def _told(progress: ImportProgress | None, phase: str, handle: BinaryIO, size: int) -> None:
    if progress is not None:
        progress(phase, min(handle.tell() / max(size, 1), 1.0))


class _Found:
    """The bad lines a first pass found: the first `MAX_ERRORS` kept, all of them counted."""

    def __init__(self) -> None:
        self.errors: list[tuple[int, str]] = []
        self.count = 0

    def add(self, errors: list[tuple[int, str]]) -> None:
        self.errors += errors[: max(MAX_ERRORS - len(self.errors), 0)]
        self.count += len(errors)

    def check(self) -> None:
        if self.count:
            raise ImportFileError(self.errors, count=self.count)


def _stored_once(factory: sessionmaker[Session], store: Callable[[Session], R]) -> R:
    """`store` in a transaction, again if another process stored some of the same records
    meanwhile (the unique constraint that stops it makes the second try find them)."""
    for attempt in range(2):
        try:
            with session_scope(factory) as session:
                return store(session)
        except IntegrityError:
            if attempt:
                raise
    raise AssertionError("unreachable")


def _rows(handle: BinaryIO, file_format: FileFormat, convert: Any) -> Iterator[tuple[int, Any]]:
    lines = _lines(handle)
    return _jsonl(lines) if file_format is FileFormat.JSONL else _csv(lines, convert)


def _lines(handle: BinaryIO) -> Iterator[str]:
    """The file's lines decoded one at a time, their endings kept: LF, CRLF, or a lone CR
    (old spreadsheet exports)."""
    number = 0
    for block in handle:  # up to each LF
        for raw in block.splitlines(keepends=True):  # bytes: splits at LF, CRLF and CR only
            number += 1
            try:
                yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError:
                raise ImportFileError([(number, "not valid UTF-8")]) from None


ONE_PER_LINE = "a JSONL file holds one JSON object per line"


def _jsonl(lines: Iterable[str]) -> Iterator[tuple[int, Any]]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = strict_json_loads(line)
        except UnfitJson as exc:
            yield number, ValueError(f"not JSON that can be stored: {exc}")
            continue
        except ValueError as exc:
            if number == 1 and line.strip() in ("[", "{"):
                yield number, ValueError(f"one JSON document over many lines: {ONE_PER_LINE}")
                return
            yield number, ValueError(f"not JSON: {exc}")
            continue
        if isinstance(record, list):
            yield number, ValueError(f"a JSON array: {ONE_PER_LINE}, not a list of them")
        elif (
            isinstance(record, dict)
            and len(record) == 1
            and isinstance(wrapped := next(iter(record.values())), list)
        ):
            yield (
                number,
                ValueError(
                    f"an object wrapping a list of {len(wrapped)} ({next(iter(record))!r}): "
                    f"{ONE_PER_LINE}, each record on its own line"
                ),
            )
        else:
            yield number, record


def _csv(lines: Iterable[str], convert: Any) -> Iterator[tuple[int, Any]]:
    reader = csv.DictReader(lines)
    if not reader.fieldnames:
        raise ImportFileError([(1, "empty file: expected a header row")])
    if len(reader.fieldnames) == 1 and (other := next(
        (mark for mark in (";", "\t", "|") if mark in reader.fieldnames[0]), None
    )):  # fmt: skip
        raise ImportFileError(
            [(1, f"columns must be separated by commas; this header uses {other!r}")]
        )
    columns = len(reader.fieldnames)
    for row in reader:
        if None in row:
            values = columns + len(row[None])
            yield reader.line_num, ValueError(f"{values} values but the header has {columns}")
            continue
        if None in row.values():
            values = sum(value is not None for value in row.values())
            yield reader.line_num, ValueError(f"{values} values but the header has {columns}")
            continue
        try:
            yield reader.line_num, convert({k.strip(): v for k, v in row.items() if k})
        except ValueError as exc:  # a metadata cell that is not JSON
            yield reader.line_num, ValueError(f"metadata: not a JSON object ({exc})")


_ITEM_FIELDS = set(ItemIn.model_fields)
_COLUMN_FIELDS = {"id": "external_id", "metadata": "attributes"}  # the API's names for them


def _item_row(row: dict[str, str]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    attributes: dict[str, Any] = {}
    for column, value in row.items():
        key = _COLUMN_FIELDS.get(column, column)
        if key not in _ITEM_FIELDS:
            if value != "":
                attributes[key] = _scalar(value)
        elif key == "tags":
            record[key] = [tag.strip() for tag in value.split("|") if tag.strip()]
        elif key == "attributes":
            record[key] = strict_json_loads(value) if value.strip() else {}
        elif value != "":
            record[key] = value
    if attributes:
        record["attributes"] = {**record.get("attributes", {}), **attributes}
    return record


def _scalar(value: str) -> Any:
    """`129` -> 129, `true` -> True, anything else stays text."""
    try:
        parsed = strict_json_loads(value)
    except ValueError:  # 1e309 and NaN too: kept as the text they are
        return value
    return parsed if isinstance(parsed, int | float | bool) else value


def _event_row(row: dict[str, str]) -> dict[str, Any]:
    return {key: value for key, value in row.items() if value != ""}


def _each(rows: Iterator[tuple[int, Any]], model: type[M]) -> Iterator[tuple[int, M | str]]:
    """(line number, the row's record or why it is not one), row by row."""
    try:
        for number, row in rows:
            if isinstance(row, Exception):
                yield number, str(row)
                continue
            try:
                yield number, model.model_validate(row)
            except ValidationError as exc:
                yield number, problems(exc, None)  # "line N: ..." names it
    except csv.Error as exc:  # e.g. a quote left open to the end of the file
        yield 0, f"unreadable CSV: {exc}"
