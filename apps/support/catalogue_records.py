"""What the catalogue file readers produce: intents as read, with the line of every value, and
the errors found, each with its line. Shared by the YAML, Rasa and CSV readers, so one set of
checks (the catalogue's own) applies to every format.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from apps.support.catalogue import (
    CatalogueError,
    InvalidValue,
    check_answer,
    check_description,
    check_name,
    check_owner,
    check_tags,
    example_hash,
    normalise_example,
)

T = TypeVar("T")
_SHORT = 40


def shorten(value: str) -> str:
    """`value` cut to a length that reads well inside an error message."""
    return value if len(value) <= _SHORT else value[: _SHORT - 3] + "..."


@dataclass(frozen=True)
class Mark:
    """Where a value was read: a 1-based line, and the file when there are several."""

    line: int
    source: str | None = None


@dataclass(frozen=True)
class LineError:
    line: int
    message: str
    source: str | None = None

    def __str__(self) -> str:
        where = f"{self.source}: line {self.line}" if self.source else f"line {self.line}"
        return f"{where}: {self.message}"


class CatalogueFileError(CatalogueError):
    """The file is not a valid catalogue; `errors` lists every problem with its line."""

    def __init__(self, errors: list[LineError]) -> None:
        self.errors = sorted(errors, key=lambda e: (e.source or "", e.line))
        count = len(self.errors)
        listed = "\n  ".join(str(error) for error in self.errors)
        super().__init__(
            f"catalogue not imported, nothing was written: {count} problem"
            f"{'s' if count != 1 else ''}\n  {listed}"
        )


class ErrorList:
    """Collects line errors while reading, so one pass reports every problem at once."""

    def __init__(self) -> None:
        self.errors: list[LineError] = []

    def add(self, mark: Mark, message: str) -> None:
        self.errors.append(LineError(mark.line, message, mark.source))

    def __bool__(self) -> bool:
        return bool(self.errors)

    def raise_if_any(self) -> None:
        if self.errors:
            raise CatalogueFileError(self.errors)


@dataclass
class ExampleRecord:
    text: str
    mark: Mark
    text_hash: str = ""  # set by `check_records`


@dataclass
class IntentRecord:
    """An intent as a file describes it, before it touches the database."""

    name: str
    mark: Mark
    answer: str = ""
    description: str | None = None
    handoff: bool = False
    tags: list[str] = field(default_factory=list)
    owner: str | None = None
    examples: list[ExampleRecord] = field(default_factory=list)
    # Where each intent-level value was read, when not on the intent's own line.
    marks: dict[str, Mark] = field(default_factory=dict)

    def mark_of(self, key: str) -> Mark:
        return self.marks.get(key, self.mark)

    def unique_examples(self) -> Iterator[ExampleRecord]:
        """The examples without repeats (same text hash), first occurrence kept."""
        seen: set[str] = set()
        for example in self.examples:
            if example.text_hash not in seen:
                seen.add(example.text_hash)
                yield example


def decode_text(data: bytes | str, source: str | None, errors: ErrorList) -> str | None:
    """The file as text: UTF-8 (a byte-order mark is fine); `None` after recording an error."""
    if isinstance(data, str):
        return data.removeprefix("\ufeff")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        errors.add(
            Mark(line, source),
            f"not UTF-8 text: byte 0x{data[exc.start]:02x} at character {column}; "
            "save the file as UTF-8",
        )
        return None


def _check(
    record: IntentRecord, key: str, errors: ErrorList, check: Callable[[T], T], value: T
) -> T:
    try:
        return check(value)
    except InvalidValue as exc:
        errors.add(record.mark_of(key), f"intent {record.name!r}: {exc}")
        return value


def check_records(records: list[IntentRecord], errors: ErrorList) -> None:
    """Apply the catalogue's checks to every record, normalising values in place.

    Besides each value: a name may appear once, an intent needs an example, and one utterance
    may teach only one intent.
    """
    first_seen: dict[str, IntentRecord] = {}
    example_of: dict[str, tuple[str, ExampleRecord]] = {}
    for record in records:
        try:
            check_name(record.name)
        except InvalidValue as exc:
            errors.add(record.mark_of("name"), f"intent {record.name!r}: {exc}")
        earlier = first_seen.setdefault(record.name, record)
        if earlier is not record:
            errors.add(
                record.mark_of("name"),
                f"duplicate intent {record.name!r} (first defined on line {earlier.mark.line}); "
                "merge the two or rename one",
            )
        record.answer = _check(record, "answer", errors, check_answer, record.answer)
        record.description = _check(
            record, "description", errors, check_description, record.description
        )
        record.owner = _check(record, "owner", errors, check_owner, record.owner)
        record.tags = _check(record, "tags", errors, check_tags, record.tags)
        if not record.examples:
            errors.add(
                record.mark_of("examples"),
                f"intent {record.name!r}: no examples; give at least one example utterance",
            )
        for example in record.examples:
            try:
                example.text = normalise_example(example.text)
            except InvalidValue as exc:
                errors.add(example.mark, f"intent {record.name!r}: {exc}")
                continue
            example.text_hash = example_hash(example.text)
            owner, first = example_of.setdefault(example.text_hash, (record.name, example))
            if owner != record.name:
                errors.add(
                    example.mark,
                    f"intent {record.name!r}: example {example.text!r} is also an example of "
                    f"intent {owner!r} (line {first.mark.line}); an utterance can teach only "
                    "one intent",
                )
