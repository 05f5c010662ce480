"""`textsuite support`: import, export and list the support bot's intent catalogue."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
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
from textsuite.cli.common import database, fail, output, settings

app = typer.Typer(help="The support bot's intent catalogue.", no_args_is_help=True)
console = output()


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


@app.command()
def stats(
    days: Annotated[float, typer.Option(min=0.01, max=366, help="The last this many days")] = 7,
) -> None:
    """What share of customers' messages the bot answered (containment), why it handed the
    others off, per intent and model version, and how reviewers judged its guesses."""
    from apps.support.stats import Tally, support_stats
    from core.storage.base import utcnow

    until = utcnow()
    with database(settings()) as session:
        found = support_stats(session, until - dt.timedelta(days=days), until)
    bot = found.bot

    def share(tally: Tally) -> str:
        rate = tally.containment_rate
        return "-" if rate is None else f"{rate:.1%}"

    console.print(
        f"last {days:g} days: {found.customer_messages} customer messages, {bot.messages} the "
        f"bot's to answer ({found.with_agents} written while a person had the conversation); "
        f"answered {bot.answered} ({share(bot)}), handed off {bot.handed_off}"
    )
    reasons = Table("handoff reason", "messages", title="why it handed off")
    for reason, count in found.handoff_reasons.items():
        reasons.add_row(reason, str(count))
    console.print(reasons)
    by = Table(
        "", "messages", "answered", "handed off", "containment",
        title="by model version, then by the bot's top intent",
    )  # fmt: skip
    for label, tally in [*found.versions.items(), *found.intents.items()]:
        counts = (tally.messages, tally.answered, tally.handed_off)
        by.add_row(label, *map(str, counts), share(tally))
    console.print(by)
    review = found.review
    console.print(
        f"review: {review.pending} pending, {review.labelled} labelled, {review.dismissed} "
        f"dismissed; of the labelled, the bot's own guess was right for {review.bot_guess_right}"
    )


@app.command()
def health() -> None:
    """What in the catalogue needs attention: intents with few examples or no answer, ones
    the production model has not learnt, and the ones its held-out messages show it mixes up."""
    from apps.support.health import catalogue_health
    from apps.support.settings import get_support_settings

    with database(settings()) as session:
        found = catalogue_health(session, get_support_settings())
    model = f"production model v{found.model_version}" if found.model_version else "no model yet"
    console.print(f"{len(found.intents)} intents, {model}, {found.problems} problem(s)")
    for intent in found.intents:
        for problem in intent.problems:
            console.print(f"  {intent.name}: {problem}")
    for name in found.unknown_to_catalogue:
        console.print(f"  {name}: the model answers it but the catalogue has lost it: retrain")
