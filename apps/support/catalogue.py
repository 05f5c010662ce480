"""The intent catalogue: intents, their example utterances and answer templates.

Plain functions over a `Session`. They flush but never commit, so the caller (a route, the
CLI, a file import) owns the transaction. The checks live here too, so the API, the file
formats and the CLI accept and refuse exactly the same values.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import unicodedata
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from apps.support.models import Example, ExampleSource, Intent
from apps.support.templates import TemplateError, parse_template
from core.storage.engine import in_slices

if TYPE_CHECKING:
    from core.ml.training.data import LabelledTexts

NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,99}$"
MAX_NAME_CHARS = 100
MAX_EXAMPLE_CHARS = 1_000
MAX_ANSWER_CHARS = 4_000
MAX_DESCRIPTION_CHARS = 2_000
MAX_OWNER_CHARS = 100
MAX_TAG_CHARS = 50
MAX_TAGS = 20
UPDATABLE_FIELDS = ("description", "answer", "handoff", "tags", "owner")

_NAME = re.compile(NAME_PATTERN)
# Control characters and lone surrogates: PostgreSQL refuses NUL, and neither belongs in text.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_CONTROL_EXCEPT_LINES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


class CatalogueError(ValueError):
    """Something about the catalogue is not right; the message says what and what to do."""


class InvalidValue(CatalogueError):
    """A value (name, answer, example...) that the catalogue does not accept."""


class IntentNotFound(CatalogueError):
    pass


class IntentExists(CatalogueError):
    pass


class ExampleNotFound(CatalogueError):
    pass


class ExampleConflict(CatalogueError):
    """An utterance that already teaches another intent: one text can teach only one."""

    def __init__(self, message: str, conflicts: Mapping[str, str]) -> None:
        super().__init__(message)
        self.conflicts = dict(conflicts)  # text -> the intent that already has it


class LastExample(CatalogueError):
    pass


# --- Checks shared by the API, the file formats and the CLI ------------------------------------


def _refuse_control_characters(value: str, what: str, *, multiline: bool) -> None:
    pattern = _CONTROL_EXCEPT_LINES if multiline else _CONTROL
    found = pattern.search(value)
    if found is not None:
        raise InvalidValue(
            f"{what} contains the control character U+{ord(found.group()):04X} at character "
            f"{found.start() + 1}; remove it"
        )


def suggest_name(value: str) -> str:
    """A valid name close to `value`, for error messages: 'Order Status' -> 'order_status'."""
    ascii_only = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode()
    cleaned = re.sub(r"[^a-z0-9_.-]+", "_", ascii_only.strip().lower()).strip("_.-")
    return cleaned[:MAX_NAME_CHARS] or "my_intent"


def check_name(value: str) -> str:
    """`value` if it is a valid intent name, else `InvalidValue` with a suggestion."""
    if not _NAME.match(value):
        raise InvalidValue(
            f"name must match {NAME_PATTERN} (lower-case letters, digits, '_', '.' and '-', "
            f"starting with a letter or digit, at most {MAX_NAME_CHARS} characters); "
            f"try {suggest_name(value)!r}"
        )
    return value


def check_answer(value: str) -> str:
    """The answer template, checked: length, characters and slot syntax. Empty is allowed (the
    bot then hands the conversation to a person with reason `no_answer`)."""
    if len(value) > MAX_ANSWER_CHARS:
        raise InvalidValue(
            f"answer is {len(value):,} characters long; the limit is {MAX_ANSWER_CHARS:,}"
        )
    _refuse_control_characters(value, "answer", multiline=True)
    try:
        parse_template(value)
    except TemplateError as exc:
        raise InvalidValue(f"answer template: {exc}") from None
    return value


def check_handoff(value: object) -> bool:
    """`value` if it is a boolean: a string such as "false" would be true, so it is refused."""
    if not isinstance(value, bool):
        raise InvalidValue(f"handoff must be true or false, got {value!r}")
    return value


def check_description(value: str | None) -> str | None:
    """The description, stripped; blank means none."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if len(value) > MAX_DESCRIPTION_CHARS:
        raise InvalidValue(
            f"description is {len(value):,} characters long; the limit is {MAX_DESCRIPTION_CHARS:,}"
        )
    _refuse_control_characters(value, "description", multiline=True)
    return value


def check_owner(value: str | None) -> str | None:
    """The owner (a team or person), stripped; blank means none."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if len(value) > MAX_OWNER_CHARS:
        raise InvalidValue(f"owner {value[:40]!r}... is longer than {MAX_OWNER_CHARS} characters")
    _refuse_control_characters(value, "owner", multiline=False)
    return value


def check_tags(values: Iterable[str]) -> list[str]:
    """Tags stripped and de-duplicated in order; none may contain '|' (the CSV separator)."""
    tags: list[str] = []
    for raw in values:
        tag = raw.strip()
        if not tag:
            raise InvalidValue("tags must not be empty")
        if len(tag) > MAX_TAG_CHARS:
            raise InvalidValue(f"tag {tag[:40]!r}... is longer than {MAX_TAG_CHARS} characters")
        if "|" in tag:
            raise InvalidValue(f"tag {tag!r} contains '|', which separates tags in CSV; remove it")
        _refuse_control_characters(tag, f"tag {tag!r}", multiline=False)
        if tag not in tags:
            tags.append(tag)
    if len(tags) > MAX_TAGS:
        raise InvalidValue(f"{len(tags)} tags; an intent may have at most {MAX_TAGS}")
    return tags


def normalise_example(text: str) -> str:
    """The example as stored: NFC, runs of whitespace collapsed to one space, ends stripped."""
    normalised = " ".join(unicodedata.normalize("NFC", text).split())
    if not normalised:
        raise InvalidValue("example is empty")
    if len(normalised) > MAX_EXAMPLE_CHARS:
        raise InvalidValue(
            f"example is {len(normalised):,} characters long; the limit is {MAX_EXAMPLE_CHARS:,}"
        )
    _refuse_control_characters(normalised, "example", multiline=False)
    return normalised


def example_hash(normalised: str) -> str:
    """What makes two examples the same: SHA-256 of the normalised, case-folded text."""
    return hashlib.sha256(normalised.casefold().encode("utf-8")).hexdigest()


# --- Reading ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IntentSummary:
    """An intent without its examples, with how many it has."""

    name: str
    description: str | None
    answer: str
    handoff: bool
    tags: list[str]
    owner: str | None
    example_count: int
    created_at: dt.datetime
    updated_at: dt.datetime


def list_intents(session: Session) -> list[IntentSummary]:
    """Every intent, by name, with its example count."""
    counts = (
        select(Example.intent_id, func.count().label("n")).group_by(Example.intent_id).subquery()
    )
    rows = session.execute(
        select(Intent, func.coalesce(counts.c.n, 0))
        .outerjoin(counts, counts.c.intent_id == Intent.id)
        .order_by(Intent.name)
    )
    return [
        IntentSummary(
            name=intent.name,
            description=intent.description,
            answer=intent.answer,
            handoff=intent.handoff,
            tags=list(intent.tags),
            owner=intent.owner,
            example_count=int(count),
            created_at=intent.created_at,
            updated_at=intent.updated_at,
        )
        for intent, count in rows
    ]


def load_catalogue(session: Session) -> list[Intent]:
    """Every intent with its examples loaded, by name (for export and import)."""
    return list(
        session.scalars(select(Intent).options(selectinload(Intent.examples)).order_by(Intent.name))
    )


def get_intent(session: Session, name: str) -> Intent:
    """The intent called `name`, with its examples; `IntentNotFound` otherwise."""
    intent = session.scalars(
        select(Intent).where(Intent.name == name).options(selectinload(Intent.examples))
    ).one_or_none()
    if intent is None:
        raise IntentNotFound(
            f"no intent named {name!r}; list them with GET /v1/support/intents "
            "or `textsuite support intents`"
        )
    return intent


def example_owners(session: Session, hashes: Iterable[str]) -> dict[str, str]:
    """For each text hash already in the catalogue, the name of the intent it teaches."""
    owners: dict[str, str] = {}
    for chunk in in_slices(sorted(set(hashes))):
        rows = session.execute(
            select(Example.text_hash, Intent.name)
            .join(Intent, Example.intent_id == Intent.id)
            .where(Example.text_hash.in_(chunk))
        )
        owners.update({text_hash: name for text_hash, name in rows})
    return owners


def catalogue_for_training(session: Session) -> LabelledTexts:
    """Every example (catalogue and reviewed) labelled with its intent's name."""
    from core.ml.training.data import LabelledTexts  # pulls torch through core.ml.training

    rows = session.execute(
        select(Example.text, Intent.name)
        .join(Intent, Example.intent_id == Intent.id)
        .order_by(Intent.name, Example.created_at, Example.id)
    ).all()
    return LabelledTexts([text for text, _ in rows], [name for _, name in rows])


def intent_descriptions(session: Session) -> dict[str, str]:
    """Intent name -> description, for the intents that have one."""
    rows = session.execute(select(Intent.name, Intent.description)).all()
    return {name: description.strip() for name, description in rows if (description or "").strip()}


# --- Writing ------------------------------------------------------------------------------------


@dataclass
class ExamplesAdded:
    """What `add_examples` did: the new rows, and the texts that were already there."""

    added: list[Example] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)


def add_examples(
    session: Session,
    intent: Intent,
    texts: Sequence[str],
    *,
    source: ExampleSource = ExampleSource.CATALOGUE,
) -> ExamplesAdded:
    """Add example utterances to `intent`; ones it already has are skipped, not an error.

    Raises `InvalidValue` for an empty or over-long text and `ExampleConflict` when a text
    already teaches another intent; then nothing is added.
    """
    normalised: list[tuple[str, str]] = []
    for position, text in enumerate(texts, 1):
        try:
            clean = normalise_example(text)
        except InvalidValue as exc:
            raise InvalidValue(f"example {position}: {exc}") from None
        normalised.append((clean, example_hash(clean)))
    owners = example_owners(session, (text_hash for _, text_hash in normalised))
    conflicts = {
        clean: owners[text_hash]
        for clean, text_hash in normalised
        if owners.get(text_hash, intent.name) != intent.name
    }
    if conflicts:
        listed = "; ".join(f"{text!r} teaches {owner!r}" for text, owner in conflicts.items())
        raise ExampleConflict(
            f"an utterance can teach only one intent: {listed}; remove it there first "
            f"or leave it out of {intent.name!r}",
            conflicts,
        )
    result = ExamplesAdded()
    present = {example.text_hash for example in intent.examples}
    for clean, text_hash in normalised:
        if text_hash in present:
            result.duplicates.append(clean)
            continue
        example = Example(text=clean, text_hash=text_hash, source=source)
        intent.examples.append(example)
        present.add(text_hash)
        result.added.append(example)
    session.flush()
    return result


def create_intent(
    session: Session,
    name: str,
    *,
    answer: str = "",
    description: str | None = None,
    handoff: bool = False,
    tags: Iterable[str] = (),
    owner: str | None = None,
    examples: Sequence[str] = (),
) -> Intent:
    """A new intent with its examples; `IntentExists` if the name is taken."""
    try:
        check_name(name)
    except InvalidValue as exc:
        raise InvalidValue(f"intent {name!r}: {exc}") from None
    if session.scalars(select(Intent.id).where(Intent.name == name)).first() is not None:
        raise IntentExists(
            f"an intent named {name!r} already exists; change it with PATCH "
            f"/v1/support/intents/{name} or choose another name"
        )
    intent = Intent(
        name=name,
        answer=check_answer(answer),
        description=check_description(description),
        handoff=check_handoff(handoff),
        tags=check_tags(tags),
        owner=check_owner(owner),
        examples=[],
    )
    session.add(intent)
    add_examples(session, intent, examples)
    return intent


def update_intent(session: Session, name: str, changes: Mapping[str, Any]) -> Intent:
    """Change some of an intent's fields (`UPDATABLE_FIELDS`); a name never changes, since
    trained models know intents by name."""
    unknown = sorted(set(changes) - set(UPDATABLE_FIELDS))
    if unknown:
        raise InvalidValue(
            f"cannot change {', '.join(map(repr, unknown))}; "
            f"changeable fields: {', '.join(UPDATABLE_FIELDS)}"
        )
    intent = get_intent(session, name)
    checks: dict[str, Any] = {
        "description": check_description,
        "answer": check_answer,
        "handoff": check_handoff,
        "tags": check_tags,
        "owner": check_owner,
    }
    for key, value in changes.items():
        setattr(intent, key, checks[key](value))
    session.flush()
    return intent


def delete_intent(session: Session, name: str) -> None:
    """Delete an intent and its examples; review items labelled with it lose the label."""
    session.delete(get_intent(session, name))
    session.flush()


def remove_example(session: Session, name: str, example_id: uuid.UUID) -> None:
    """Remove one example; an intent keeps at least one (delete the intent instead)."""
    intent = get_intent(session, name)
    example = next((e for e in intent.examples if e.id == example_id), None)
    if example is None:
        raise ExampleNotFound(f"intent {name!r} has no example with id {example_id}")
    if len(intent.examples) == 1:
        raise LastExample(
            f"{example.text!r} is the last example of {name!r}; an intent needs at least one: "
            "add another first, or delete the intent"
        )
    intent.examples.remove(example)
    session.flush()
