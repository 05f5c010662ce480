"""Catalogue routes: intents and their examples, file import and export (`support` scope).

Paths are relative: the app mounts this router under `/v1/support`.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import Header, HTTPException, Query, Response, status
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from apps.support import catalogue
from apps.support.api.deps import SupportSettingsDep
from apps.support.catalogue_formats import (
    CatalogueFileError,
    CatalogueFormat,
    ExportFormat,
    ImportMode,
    export_catalogue,
    import_catalogue,
)
from apps.support.health import catalogue_health
from apps.support.models import ExampleSource, Intent
from apps.support.templates import slot_names
from core.api.deps import RawBody, SessionDep, scoped_router
from core.storage.models import Scope

router = scoped_router(Scope.SUPPORT, "support: catalogue")

MAX_EXAMPLES_PER_REQUEST = 1_000

Name = Annotated[
    str,
    Field(max_length=catalogue.MAX_NAME_CHARS, examples=["order_status"]),
    AfterValidator(catalogue.check_name),
]
Answer = Annotated[
    str,
    Field(
        max_length=catalogue.MAX_ANSWER_CHARS,
        description="Reply template; slots such as {customer_name} or {order_id|your order}",
    ),
    AfterValidator(catalogue.check_answer),
]
Description = Annotated[
    str | None,
    Field(max_length=catalogue.MAX_DESCRIPTION_CHARS),
    AfterValidator(catalogue.check_description),
]
Owner = Annotated[
    str | None,
    Field(max_length=catalogue.MAX_OWNER_CHARS),
    AfterValidator(catalogue.check_owner),
]
Tags = Annotated[
    list[Annotated[str, Field(max_length=catalogue.MAX_TAG_CHARS)]],
    Field(max_length=catalogue.MAX_TAGS),
    AfterValidator(catalogue.check_tags),
]
ExampleText = Annotated[
    str,
    Field(max_length=catalogue.MAX_EXAMPLE_CHARS),
    AfterValidator(catalogue.normalise_example),
]
ExampleTexts = Annotated[
    list[ExampleText], Field(min_length=1, max_length=MAX_EXAMPLES_PER_REQUEST)
]


class IntentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    answer: Answer = ""
    description: Description = None
    handoff: bool = Field(default=False, description="Recognising it means: hand over to a person")
    tags: Tags = Field(default_factory=list)
    owner: Owner = None
    examples: ExampleTexts


class IntentUpdate(BaseModel):
    """Only the fields sent change; `null` clears description or owner."""

    model_config = ConfigDict(extra="forbid")

    answer: Answer | None = None
    description: Description = None
    handoff: bool | None = None
    tags: Tags | None = None
    owner: Owner = None

    @model_validator(mode="after")
    def _not_null(self) -> IntentUpdate:
        for key in ("answer", "handoff", "tags"):
            if key in self.model_fields_set and getattr(self, key) is None:
                raise ValueError(f"{key} cannot be null; leave it out to keep the current value")
        return self


class ExamplePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    text: str
    source: ExampleSource
    created_at: dt.datetime


class _IntentFields(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    description: str | None
    answer: str
    slots: list[str] = Field(description="Slots the answer template uses")
    handoff: bool
    tags: list[str]
    owner: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


class IntentSummaryPublic(_IntentFields):
    example_count: int


class IntentPublic(_IntentFields):
    examples: list[ExamplePublic]


class ExamplesCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    texts: ExampleTexts


class ExamplesAddedPublic(BaseModel):
    added: list[ExamplePublic]
    duplicates: list[str] = Field(description="Texts the intent already had: skipped")


class LineErrorPublic(BaseModel):
    line: int
    message: str


class ImportErrorsPublic(BaseModel):
    detail: str
    errors: list[LineErrorPublic]


class ImportReportPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    mode: ImportMode
    created: list[str]
    updated: list[str]
    unchanged: list[str]
    deleted: list[str]
    examples_added: int
    examples_skipped: int
    examples_removed: int


def _public(intent: Intent | catalogue.IntentSummary, **extra: Any) -> dict[str, Any]:
    fields = {key: getattr(intent, key) for key in _IntentFields.model_fields if key != "slots"}
    return {**fields, "slots": slot_names(intent.answer), **extra}


_STATUS = {
    catalogue.IntentNotFound: status.HTTP_404_NOT_FOUND,
    catalogue.ExampleNotFound: status.HTTP_404_NOT_FOUND,
    catalogue.IntentExists: status.HTTP_409_CONFLICT,
    catalogue.ExampleConflict: status.HTTP_409_CONFLICT,
    catalogue.LastExample: status.HTTP_409_CONFLICT,
}


@contextmanager
def _catalogue_change(session: Session) -> Iterator[None]:
    """Run a change and commit it; catalogue errors become 404/409/422, and a write that lost
    a race with another request (a unique name or example) becomes 409."""
    try:
        yield
        session.commit()
    except CatalogueFileError:
        session.rollback()
        raise  # the import route answers with the errors by line
    except catalogue.CatalogueError as exc:
        session.rollback()
        code = _STATUS.get(type(exc), status.HTTP_422_UNPROCESSABLE_CONTENT)
        raise HTTPException(code, str(exc)) from None
    except IntegrityError:
        session.rollback()
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            "the catalogue changed while this request ran (the same name or example was "
            "added at the same time); retry",
        ) from None


_CONFLICTS = {409: {"description": "name taken, or a text already teaches another intent"}}


@router.get("/intents", response_model=list[IntentSummaryPublic], summary="Every intent")
def list_intents(session: SessionDep) -> list[dict[str, Any]]:
    return [
        _public(summary, example_count=summary.example_count)
        for summary in catalogue.list_intents(session)
    ]


@router.post(
    "/intents",
    response_model=IntentPublic,
    status_code=status.HTTP_201_CREATED,
    summary="Create an intent with its examples",
    responses=_CONFLICTS,
)
def create_intent(body: IntentCreate, session: SessionDep) -> dict[str, Any]:
    with _catalogue_change(session):
        intent = catalogue.create_intent(session, **body.model_dump())
    return _public(intent, examples=intent.examples)


@router.get("/intents/{name}", response_model=IntentPublic, summary="An intent with its examples")
def get_intent(name: str, session: SessionDep) -> dict[str, Any]:
    try:
        intent = catalogue.get_intent(session, name)
    except catalogue.IntentNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    return _public(intent, examples=intent.examples)


@router.patch("/intents/{name}", response_model=IntentPublic, summary="Change an intent's fields")
def update_intent(name: str, body: IntentUpdate, session: SessionDep) -> dict[str, Any]:
    with _catalogue_change(session):
        intent = catalogue.update_intent(session, name, body.model_dump(exclude_unset=True))
    return _public(intent, examples=intent.examples)


@router.delete(
    "/intents/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete an intent and its examples",
)
def delete_intent(name: str, session: SessionDep) -> Response:
    with _catalogue_change(session):
        catalogue.delete_intent(session, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/intents/{name}/examples",
    response_model=ExamplesAddedPublic,
    summary="Add example utterances (ones already there are skipped)",
    responses=_CONFLICTS,
)
def add_examples(name: str, body: ExamplesCreate, session: SessionDep) -> dict[str, Any]:
    with _catalogue_change(session):
        intent = catalogue.get_intent(session, name)
        added = catalogue.add_examples(session, intent, body.texts)
    return {"added": added.added, "duplicates": added.duplicates}


@router.delete(
    "/intents/{name}/examples/{example_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove one example",
    responses={409: {"description": "the intent's last example"}},
)
def remove_example(name: str, example_id: uuid.UUID, session: SessionDep) -> Response:
    with _catalogue_change(session):
        catalogue.remove_example(session, name, example_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


_FILE_BODY = {
    "requestBody": {
        "required": True,
        "description": "The catalogue file as is (UTF-8); for Rasa, a `responses:` document "
        "may follow the NLU one after `---`.",
        "content": {
            media: {"schema": {"type": "string"}}
            for media in ("application/yaml", "text/csv", "text/plain")
        },
    }
}


@router.post(
    "/catalogue/import",
    response_model=ImportReportPublic,
    summary="Import a catalogue file (all or nothing)",
    responses={422: {"model": ImportErrorsPublic, "description": "problems, by line"}},
    openapi_extra=_FILE_BODY,
)
def import_file(
    body: RawBody,
    session: SessionDep,
    format_: Annotated[
        CatalogueFormat | None,
        Query(alias="format", description="Default: CSV for a text/csv body, else YAML."),
    ] = None,
    content_type: Annotated[str | None, Header()] = None,
    mode: ImportMode = ImportMode.MERGE,
) -> Any:
    if format_ is None:
        is_csv = (content_type or "").split(";")[0].strip().lower() == "text/csv"
        format_ = CatalogueFormat.CSV if is_csv else CatalogueFormat.YAML
    try:
        with _catalogue_change(session):
            report = import_catalogue(session, body, format_, mode=mode)
    except CatalogueFileError as exc:
        count = len(exc.errors)
        return JSONResponse(
            {
                "detail": f"catalogue not imported, nothing was written: {count} problem"
                f"{'s' if count != 1 else ''}",
                "errors": [{"line": e.line, "message": e.message} for e in exc.errors],
            },
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )
    return report


@router.get(
    "/catalogue/export",
    summary="Download the catalogue as YAML or CSV",
    response_class=Response,
    responses={
        200: {"content": {"application/yaml": {}, "text/csv": {}}, "description": "The file"}
    },
)
def export_file(
    session: SessionDep,
    format_: Annotated[ExportFormat, Query(alias="format")] = ExportFormat.YAML,
) -> Response:
    return Response(
        export_catalogue(session, format_),
        media_type=format_.media_type,
        headers={"Content-Disposition": f'attachment; filename="{format_.filename}"'},
    )


class IntentHealthPublic(BaseModel):
    name: str
    examples: int
    validation_f1: float | None = Field(description="The production model's, held out")
    confused_with: dict[str, int] = Field(description="Taken for these, so many times")
    problems: list[str]


class CatalogueHealthPublic(BaseModel):
    model_version: int | None = Field(description="The production version read (None: none)")
    problems: int
    intents: list[IntentHealthPublic] = Field(description="Those with problems first")
    unknown_to_catalogue: list[str] = Field(
        description="Intents the production model answers that the catalogue no longer has"
    )


@router.get(
    "/catalogue/health",
    response_model=CatalogueHealthPublic,
    summary="What in the catalogue needs attention",
)
def read_health(session: SessionDep, support: SupportSettingsDep) -> CatalogueHealthPublic:
    """Intents with fewer than 8 examples or no answer, intents the production model has not
    learnt, weak held-out F1, and the intents its held-out messages show it mixes up."""
    found = catalogue_health(session, support)
    return CatalogueHealthPublic(
        model_version=found.model_version,
        problems=found.problems,
        intents=[IntentHealthPublic(**asdict(intent)) for intent in found.intents],
        unknown_to_catalogue=found.unknown_to_catalogue,
    )
