"""Import and export of the intent catalogue: textsuite YAML, CSV, and Rasa NLU YAML (import).

Textsuite YAML (the project's own format; the demo catalogue uses it)::

    version: 1
    intents:
      - name: order_status
        description: The customer asks where an order is    # optional
        answer: "Hi {customer_name|there}! Order {order_id} is on its way."
        handoff: false                                      # optional, default false
        tags: [orders]                                      # optional
        owner: support-team                                 # optional
        examples:
          - Where is my order?

An import is all-or-nothing: the whole file is read and checked first, every problem is
reported with its line, and only a file without problems is written, in the caller's
transaction. `merge` upserts the file's intents (fields the file leaves out are kept) and adds
their new examples; `replace` makes the catalogue exactly the file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import yaml
from sqlalchemy.orm import Session

from apps.support.catalogue import InvalidValue, load_catalogue
from apps.support.catalogue_csv import read_csv, write_csv
from apps.support.catalogue_records import (
    CatalogueFileError,
    ErrorList,
    IntentRecord,
    LineError,
    Mark,
    check_records,
    decode_text,
)
from apps.support.catalogue_yaml import read_rasa, read_yaml
from apps.support.models import Example, ExampleSource, Intent

__all__ = [
    "CatalogueFileError",
    "CatalogueFormat",
    "ExportFormat",
    "ImportMode",
    "ImportReport",
    "LineError",
    "detect_format",
    "export_catalogue",
    "import_catalogue",
    "read_catalogue",
]

INTENT_FIELDS = ("answer", "description", "handoff", "tags", "owner")


class CatalogueFormat(StrEnum):
    YAML = "yaml"
    CSV = "csv"
    RASA = "rasa"


class ExportFormat(StrEnum):
    YAML = "yaml"
    CSV = "csv"

    @property
    def media_type(self) -> str:
        return "application/yaml" if self is ExportFormat.YAML else "text/csv; charset=utf-8"

    @property
    def filename(self) -> str:
        return f"support-catalogue.{self.value}"


class ImportMode(StrEnum):
    MERGE = "merge"
    REPLACE = "replace"


@dataclass
class ImportReport:
    """What an import changed (intent names, example counts)."""

    mode: ImportMode
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    examples_added: int = 0
    examples_skipped: int = 0  # already in the catalogue, or repeated in the file
    examples_removed: int = 0  # replace: examples of kept intents that the file leaves out

    def summary(self) -> str:
        return (
            f"{len(self.created)} intents created, {len(self.updated)} updated, "
            f"{len(self.unchanged)} unchanged, {len(self.deleted)} deleted; "
            f"{self.examples_added} examples added, {self.examples_skipped} duplicates skipped, "
            f"{self.examples_removed} removed"
        )


def detect_format(data: bytes | str, filename: str | None = None) -> CatalogueFormat | None:
    """The format of a file from its name and content; `None` when it can't be told."""
    suffix = filename.lower().rsplit(".", 1)[-1] if filename and "." in filename else ""
    if suffix == "csv":
        return CatalogueFormat.CSV
    head = data[:65536].decode("utf-8", "replace") if isinstance(data, bytes) else data[:65536]
    if re.search(r"^nlu\s*:", head, re.MULTILINE):
        return CatalogueFormat.RASA
    if suffix in ("yml", "yaml") or re.search(r"^intents\s*:", head, re.MULTILINE):
        return CatalogueFormat.YAML
    first_line = head.lstrip("\ufeff").split("\n", 1)[0].lower()
    if "intent" in first_line and "," in first_line:
        return CatalogueFormat.CSV
    return None


def read_catalogue(
    data: bytes | str,
    format: CatalogueFormat,
    *,
    source: str | None = None,
    domain: bytes | str | None = None,
    domain_source: str | None = None,
) -> list[IntentRecord]:
    """The intents of a file, checked; `CatalogueFileError` lists every problem by line.

    `source` names the file in errors (the CLI passes the path); `domain` is a Rasa domain
    file whose `responses: utter_<intent>` become the answers.
    """
    records, errors = _read_records(data, format, source, domain, domain_source)
    errors.raise_if_any()
    return records


def _read_records(
    data: bytes | str,
    format: CatalogueFormat,
    source: str | None,
    domain: bytes | str | None,
    domain_source: str | None,
) -> tuple[list[IntentRecord], ErrorList]:
    """The intents that could be read, and every problem found in the file."""
    if domain is not None and format is not CatalogueFormat.RASA:
        raise InvalidValue(f"a domain file only goes with format rasa, not {format.value}")
    errors = ErrorList()
    text = decode_text(data, source, errors)
    domain_text = decode_text(domain, domain_source, errors) if domain is not None else None
    records: list[IntentRecord] = []
    if text is not None and not (domain is not None and domain_text is None):
        if format is CatalogueFormat.YAML:
            records = read_yaml(text, source, errors)
        elif format is CatalogueFormat.CSV:
            records = read_csv(text, source, errors)
        else:
            records = read_rasa(
                text, source, errors, domain=domain_text, domain_source=domain_source
            )
    check_records(records, errors)
    if not records and not errors:
        errors.add(Mark(1, source), "the file has no intents")
    return records, errors


def import_catalogue(
    session: Session,
    data: bytes | str,
    format: CatalogueFormat,
    *,
    mode: ImportMode = ImportMode.MERGE,
    source: str | None = None,
    domain: bytes | str | None = None,
    domain_source: str | None = None,
) -> ImportReport:
    """Read, check and write a catalogue file; nothing is written when anything is wrong.

    Flushes but does not commit: the caller's transaction makes the import atomic.
    """
    records, errors = _read_records(data, format, source, domain, domain_source)
    existing = {intent.name: intent for intent in load_catalogue(session)}
    if mode is ImportMode.MERGE:  # reported with the file's own problems, in one round
        _refuse_conflicts(records, existing, errors)
    errors.raise_if_any()
    report = ImportReport(mode=mode)
    for record in records:
        intent = existing.get(record.name)
        if intent is None:
            intent = Intent(name=record.name, examples=[])
            _set_fields(intent, record, INTENT_FIELDS)
            session.add(intent)
            _sync_examples(intent, record, mode, report)
            report.created.append(record.name)
            continue
        given = INTENT_FIELDS if mode is ImportMode.REPLACE else tuple(record.marks)
        changed = _set_fields(intent, record, [key for key in INTENT_FIELDS if key in given])
        changed |= _sync_examples(intent, record, mode, report)
        (report.updated if changed else report.unchanged).append(record.name)
    if mode is ImportMode.REPLACE:
        named = {record.name for record in records}
        for name, intent in sorted(existing.items()):
            if name not in named:
                session.delete(intent)
                report.deleted.append(name)
    session.flush()
    return report


def _refuse_conflicts(
    records: Sequence[IntentRecord], existing: dict[str, Intent], errors: ErrorList
) -> None:
    """Merge keeps the catalogue's other examples, so a file example may not teach another
    intent there (replace rewrites those intents, so only the file's own conflicts count)."""
    owner_of = {
        example.text_hash: intent.name
        for intent in existing.values()
        for example in intent.examples
    }
    for record in records:
        for example in record.examples:
            owner = owner_of.get(example.text_hash, record.name)
            if owner != record.name:
                errors.add(
                    example.mark,
                    f"intent {record.name!r}: example {example.text!r} already teaches intent "
                    f"{owner!r} in the catalogue; remove it there first, or import with mode "
                    "replace",
                )


def _set_fields(intent: Intent, record: IntentRecord, keys: Sequence[str]) -> bool:
    changed = False
    for key in keys:
        value: Any = getattr(record, key)
        if getattr(intent, key, None) != value:
            setattr(intent, key, list(value) if key == "tags" else value)
            changed = True
    return changed


def _sync_examples(
    intent: Intent, record: IntentRecord, mode: ImportMode, report: ImportReport
) -> bool:
    present = {example.text_hash: example for example in intent.examples}
    wanted = list(record.unique_examples())
    report.examples_skipped += len(record.examples) - len(wanted)
    changed = False
    for example in wanted:
        if example.text_hash in present:
            report.examples_skipped += 1
            continue
        intent.examples.append(
            Example(text=example.text, text_hash=example.text_hash, source=ExampleSource.CATALOGUE)
        )
        report.examples_added += 1
        changed = True
    if mode is ImportMode.REPLACE:
        keep = {example.text_hash for example in wanted}
        for text_hash, example in present.items():
            if text_hash not in keep:
                intent.examples.remove(example)
                report.examples_removed += 1
                changed = True
    return changed


# --- Export -------------------------------------------------------------------------------------


class _FlowList(list):  # type: ignore[type-arg]
    """A list written inline (`tags: [orders, returns]`)."""


class _CatalogueDumper(yaml.SafeDumper):
    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)  # indent lists under their key


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar(
        "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None
    )


def _represent_flow_list(dumper: yaml.SafeDumper, value: list[str]) -> yaml.SequenceNode:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=True)


_CatalogueDumper.add_representer(str, _represent_str)
_CatalogueDumper.add_representer(_FlowList, _represent_flow_list)


def write_yaml(intents: Sequence[Intent]) -> str:
    """The catalogue in textsuite YAML; importing it into an empty catalogue gives it back."""
    entries = []
    for intent in intents:
        entry: dict[str, Any] = {"name": intent.name}
        if intent.description is not None:
            entry["description"] = intent.description
        entry["answer"] = intent.answer
        entry["handoff"] = bool(intent.handoff)
        if intent.tags:
            entry["tags"] = _FlowList(intent.tags)
        if intent.owner is not None:
            entry["owner"] = intent.owner
        entry["examples"] = [example.text for example in intent.examples]
        entries.append(entry)
    body = yaml.dump(
        {"version": 1, "intents": entries},
        Dumper=_CatalogueDumper,
        sort_keys=False,
        allow_unicode=True,
        width=10_000,
    )
    return "# textsuite support catalogue (import: textsuite support import FILE)\n" + body


def export_catalogue(session: Session, format: ExportFormat) -> str:
    """The whole catalogue as YAML or CSV text."""
    intents = load_catalogue(session)
    return write_csv(intents) if format is ExportFormat.CSV else write_yaml(intents)
