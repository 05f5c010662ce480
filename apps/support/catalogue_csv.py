"""Reading and writing the catalogue as CSV: one row per example utterance.

Columns: `intent,text` (required) and `answer,description,handoff,tags,owner` (optional; tags
separated by `|`). Intent-level values must agree across an intent's rows; an empty cell means
"not given here", so a spreadsheet may fill them on the first row only.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from apps.support.catalogue_records import ErrorList, ExampleRecord, IntentRecord, Mark, shorten
from apps.support.models import Intent

REQUIRED_COLUMNS = ("intent", "text")
OPTIONAL_COLUMNS = ("answer", "description", "handoff", "tags", "owner")
COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
_TRUE = ("true", "yes", "y", "1")
_FALSE = ("false", "no", "n", "0")


def _header(row: list[str], mark: Mark, errors: ErrorList) -> list[str] | None:
    names = [cell.strip().lower() for cell in row]
    problems = []
    for name in REQUIRED_COLUMNS:
        if name not in names:
            problems.append(f"missing column {name!r}")
    for name in names:
        if name not in COLUMNS:
            problems.append(f"unknown column {shorten(name)!r}")
    for name in sorted({name for name in names if names.count(name) > 1}):
        problems.append(f"column {name!r} appears twice")
    if problems:
        hint = ""
        if len(row) == 1 and any(sep in row[0] for sep in ";\t"):
            hint = " (columns must be separated by commas)"
        errors.add(
            mark,
            f"bad header: {'; '.join(problems)}{hint}; expected {','.join(REQUIRED_COLUMNS)} "
            f"and optionally {','.join(OPTIONAL_COLUMNS)}",
        )
        return None
    return names


def _intent_value(column: str, cell: str, mark: Mark, errors: ErrorList) -> object:
    if column == "handoff":
        lowered = cell.lower()
        if lowered in _TRUE or lowered in _FALSE:
            return lowered in _TRUE
        errors.add(mark, f"handoff must be true or false, got {shorten(cell)!r}")
        return None
    if column == "tags":
        return [tag.strip() for tag in cell.split("|") if tag.strip()]
    return cell


def read_csv(text: str, source: str | None, errors: ErrorList) -> list[IntentRecord]:
    """Intents from CSV rows; each error names the row's line (its first, if it spans several)."""
    # strict: a quote left open is an error, not the rest of the file read into one value
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records: dict[str, IntentRecord] = {}
    header: list[str] | None = None
    line = 1
    try:
        for row in reader:
            mark, line = Mark(line, source), reader.line_num + 1
            if not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = _header(row, mark, errors)
                if header is None:
                    return []
                continue
            if len(row) > len(header):
                errors.add(
                    mark,
                    f"the row has {len(row)} values but the header has {len(header)} columns; "
                    'put "quotes" around a value that contains a comma',
                )
                continue
            cells = [_from_text(cell) for cell in row]
            _read_row(dict(zip(header, cells, strict=False)), mark, records, errors)
    except csv.Error as exc:
        errors.add(Mark(line, source), f"invalid CSV: {exc}")
        return []
    if header is None:
        errors.add(
            Mark(1, source),
            f"empty file; expected a header row: {','.join(REQUIRED_COLUMNS)}[,"
            f"{','.join(OPTIONAL_COLUMNS)}]",
        )
    return list(records.values())


def _read_row(
    cells: dict[str, str], mark: Mark, records: dict[str, IntentRecord], errors: ErrorList
) -> None:
    name = cells.get("intent", "").strip()
    if not name:
        errors.add(mark, "the row has no intent; fill the 'intent' column")
        return
    record = records.get(name)
    if record is None:
        record = records[name] = IntentRecord(name=name, mark=mark)
    for column in OPTIONAL_COLUMNS:
        cell = cells.get(column, "").strip() if column != "answer" else cells.get(column, "")
        if not cell.strip():
            continue
        value = _intent_value(column, cell, mark, errors)
        if value is None:
            continue
        if column not in record.marks:
            setattr(record, column, value)
            record.marks[column] = mark
        elif getattr(record, column) != value:
            first = record.marks[column].line
            errors.add(
                mark,
                f"intent {name!r}: {column} differs from line {first} "
                f"({shorten(str(getattr(record, column)))!r} there, {shorten(cell)!r} here); give "
                "the same value on every row of an intent, or leave it empty after the first",
            )
    record.examples.append(ExampleRecord(cells.get("text", ""), mark))


# A cell a spreadsheet would run as a formula (an example a customer wrote may start so):
# written behind a `'`, which spreadsheets show as text and reading the file takes off again.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _as_text(cell: str) -> str:
    return "'" + cell if cell.startswith(_FORMULA_START) else cell


def _from_text(cell: str) -> str:
    return cell[1:] if cell.startswith("'") and cell[1:].startswith(_FORMULA_START) else cell


def write_csv(intents: Sequence[Intent]) -> str:
    """The catalogue as CSV, every intent-level value repeated on each of its rows."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    for intent in intents:
        fields = [
            intent.answer,
            intent.description or "",
            "true" if intent.handoff else "false",
            "|".join(intent.tags),
            intent.owner or "",
        ]
        for example in intent.examples or [None]:
            row = [intent.name, example.text if example else "", *fields]
            writer.writerow([_as_text(cell) for cell in row])
    return out.getvalue()
