"""`textsuite support`: import, export and list the support bot's intent catalogue."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from apps.support import catalogue
from apps.support.catalogue_formats import (
    CatalogueFileError,
    CatalogueFormat,
    ExportFormat,
    ImportMode,
    detect_format,
    export_catalogue,
    import_catalogue,
)
from textsuite.cli.common import database, fail, settings

app = typer.Typer(help="The support bot's intent catalogue.", no_args_is_help=True)
console = Console()


class FileFormat(StrEnum):
    AUTO = "auto"
    YAML = "yaml"
    CSV = "csv"
    RASA = "rasa"


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror or exc}")


def _choose_format(
    choice: FileFormat, file: Path, data: bytes, domain: Path | None
) -> CatalogueFormat:
    if choice is not FileFormat.AUTO:
        return CatalogueFormat(choice.value)
    if domain is not None:
        return CatalogueFormat.RASA
    detected = detect_format(data, file.name)
    if detected is None:
        fail(f"cannot tell the format of {file}; pass --format yaml, csv or rasa")
    return detected


@app.command("import")
def import_file(
    file: Annotated[Path, typer.Argument(help="Catalogue file: textsuite YAML, CSV or Rasa NLU")],
    format_: Annotated[
        FileFormat,
        typer.Option("--format", case_sensitive=False, help="File format; auto looks at it"),
    ] = FileFormat.AUTO,
    domain: Annotated[
        Path | None,
        typer.Option(help="Rasa domain file: its responses utter_<intent> become the answers"),
    ] = None,
    mode: Annotated[
        ImportMode,
        typer.Option(
            case_sensitive=False,
            help="merge: add and update intents; replace: the file becomes the whole catalogue",
        ),
    ] = ImportMode.MERGE,
) -> None:
    """Import a catalogue file; any problem is listed by line and nothing is written."""
    data = _read(file)
    domain_data = _read(domain) if domain is not None else None
    chosen = _choose_format(format_, file, data, domain)
    if domain is not None and chosen is not CatalogueFormat.RASA:
        fail(f"--domain only goes with --format rasa, not {chosen.value}")
    with database(settings()) as session:
        try:
            report = import_catalogue(
                session,
                data,
                chosen,
                mode=mode,
                source=str(file),
                domain=domain_data,
                domain_source=str(domain) if domain is not None else None,
            )
        except CatalogueFileError as exc:
            for error in exc.errors:
                typer.echo(f"  {error}", err=True)
            count = len(exc.errors)
            fail(f"{file} not imported, nothing was written: {count} problem{'s' * (count != 1)}")
    typer.echo(f"imported {file} ({chosen.value}, {mode.value}): {report.summary()}")
    for label, names in (
        ("created", report.created),
        ("updated", report.updated),
        ("deleted", report.deleted),
    ):
        if names:
            typer.echo(f"  {label}: {', '.join(names)}")


@app.command()
def export(
    format_: Annotated[
        ExportFormat, typer.Option("--format", case_sensitive=False, help="File format")
    ] = ExportFormat.YAML,
    output: Annotated[
        Path | None, typer.Option(help="Write to this file [default: standard output]")
    ] = None,
) -> None:
    """Export the whole catalogue (importing it into an empty database gives it back)."""
    with database(settings()) as session:
        text = export_catalogue(session, format_)
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8", newline="")
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}")
    typer.echo(f"wrote the catalogue to {output}", err=True)


@app.command()
def intents() -> None:
    """Every intent with its example count, handoff flag, tags, owner and answer."""
    with database(settings()) as session:
        summaries = catalogue.list_intents(session)
    if not summaries:
        typer.echo("the catalogue is empty; import one with `textsuite support import FILE`")
        return
    table = Table("intent", "examples", "handoff", "tags", "owner", "answer")
    table.columns[0].no_wrap = True
    for summary in summaries:
        answer = summary.answer if len(summary.answer) <= 60 else summary.answer[:57] + "..."
        table.add_row(
            summary.name,
            str(summary.example_count),
            "yes" if summary.handoff else "",
            ", ".join(summary.tags),
            summary.owner or "",
            answer or "(none: hands off)",
        )
    console.print(table)
