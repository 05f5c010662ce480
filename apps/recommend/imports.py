"""Bulk files of items or events: JSON Lines or CSV, checked whole before anything is stored.

JSONL: one object per line with the fields of the API (`ItemIn`, `EventIn`). CSV: a header
row naming those fields; for items, `tags` is `|`-separated, `active` is true/false, and any
column that is not an item field becomes an attribute. Every bad line is reported with its
number and what is wrong; a file with any bad line stores nothing.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session

from apps.recommend.catalogue import ItemIn
from apps.recommend.events import EventIn, EventRejected, RatingScale, record_events
from core.validation import problems

M = TypeVar("M", bound=BaseModel)
MAX_ERRORS = 50


class FileFormat(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"


class ImportFileError(ValueError):
    """Lines of an import file that are wrong: `errors` is [(line number, message)]."""

    def __init__(self, errors: list[tuple[int, str]]) -> None:
        self.errors = errors[:MAX_ERRORS]
        listed = "; ".join(f"line {line}: {message}" for line, message in self.errors[:10])
        more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
        super().__init__(f"{len(errors)} bad line(s), nothing imported: {listed}{more}")


def detect_format(filename: str | None, content_type: str | None, data: bytes) -> FileFormat:
    name, kind = (filename or "").lower(), (content_type or "").lower()
    if name.endswith((".jsonl", ".ndjson", ".json")) or "json" in kind:
        return FileFormat.JSONL
    if name.endswith(".csv") or "csv" in kind:
        return FileFormat.CSV
    return FileFormat.JSONL if data.lstrip()[:1] == b"{" else FileFormat.CSV


@dataclass(frozen=True)
class EventFile:
    """The events of a file that could be read, each with the line it was read from, and the
    lines that could not (line number, why)."""

    events: list[EventIn]
    lines: list[int]
    errors: list[tuple[int, str]]

    def rejected(self, exc: EventRejected | None = None) -> ImportFileError:
        """The file's bad lines: those that could not be read, and the events
        `record_events` refused (`exc`), named by their lines."""
        refused = [(self.lines[i], why) for i, why in exc.problems.items()] if exc else []
        return ImportFileError(sorted([*self.errors, *refused]))

    def check(self, session: Session, ratings: RatingScale) -> None:
        """`ImportFileError` naming every bad line when any line could not be read: the
        events that were read are checked against the database too (unknown items, reused
        ids), so one answer lists every problem. A file that reads whole is left to
        `record_events`."""
        if not self.errors:
            return
        try:
            record_events(session, self.events, ratings, write=False)
        except EventRejected as exc:
            raise self.rejected(exc) from None
        raise self.rejected()


def read_items(data: bytes, file_format: FileFormat) -> list[ItemIn]:
    rows = _jsonl(data) if file_format is FileFormat.JSONL else _csv(data, _item_row)
    return [item for _, item in _validated(rows, ItemIn)]


def read_events(data: bytes, file_format: FileFormat) -> EventFile:
    """The file's events, and its bad lines (`EventFile.check` refuses those, an empty file's
    too); a file that cannot be decoded raises `ImportFileError`."""
    rows = _jsonl(data) if file_format is FileFormat.JSONL else _csv(data, _event_row)
    numbered, errors = _numbered(rows, EventIn)
    return EventFile([e for _, e in numbered], [line for line, _ in numbered], errors)


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportFileError([(data[: exc.start].count(b"\n") + 1, "not valid UTF-8")]) from None


def _jsonl(data: bytes) -> Iterator[tuple[int, Any]]:
    for number, line in enumerate(_text(data).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, ValueError(f"not JSON: {exc.msg} at column {exc.colno}")


def _csv(data: bytes, convert: Any) -> Iterator[tuple[int, Any]]:
    reader = csv.DictReader(io.StringIO(_text(data), newline=""))
    if not reader.fieldnames:
        raise ImportFileError([(1, "empty file: expected a header row")])
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
        except ValueError as exc:  # an attributes cell that is not JSON
            yield reader.line_num, ValueError(f"attributes: not a JSON object ({exc})")


_ITEM_FIELDS = set(ItemIn.model_fields)


def _item_row(row: dict[str, str]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    attributes: dict[str, Any] = {}
    for key, value in row.items():
        if key not in _ITEM_FIELDS:
            if value != "":
                attributes[key] = _scalar(value)
        elif key == "tags":
            record[key] = [tag.strip() for tag in value.split("|") if tag.strip()]
        elif key == "attributes":
            record[key] = json.loads(value) if value.strip() else {}
        elif value != "":
            record[key] = value
    if attributes:
        record["attributes"] = {**record.get("attributes", {}), **attributes}
    return record


def _scalar(value: str) -> Any:
    """`129` -> 129, `true` -> True, anything else stays text."""
    try:
        parsed = json.loads(value)
    except ValueError:
        return value
    return parsed if isinstance(parsed, int | float | bool) else value


def _event_row(row: dict[str, str]) -> dict[str, Any]:
    return {key: value for key, value in row.items() if value != ""}


def _validated(rows: Iterator[tuple[int, Any]], model: type[M]) -> list[tuple[int, M]]:
    """(line number, record) for every row, or `ImportFileError` naming every bad line."""
    records, errors = _numbered(rows, model)
    if errors:
        raise ImportFileError(errors)
    return records


def _numbered(
    rows: Iterator[tuple[int, Any]], model: type[M]
) -> tuple[list[tuple[int, M]], list[tuple[int, str]]]:
    """(line number, record) for every good row, and (line number, why) for every bad one (a
    file of no records at all is one)."""
    records: list[tuple[int, M]] = []
    errors: list[tuple[int, str]] = []
    try:
        for number, row in rows:
            if isinstance(row, Exception):
                errors.append((number, str(row)))
                continue
            try:
                records.append((number, model.model_validate(row)))
            except ValidationError as exc:
                errors.append((number, problems(exc, "line")))
    except csv.Error as exc:  # e.g. a quote left open to the end of the file
        errors.append((0, f"unreadable CSV: {exc}"))
    if not records and not errors:
        errors.append((1, "the file holds no records"))
    return records, errors
