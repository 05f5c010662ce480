"""`textsuite recommend`: bulk catalogue and event files, and embedding the catalogue."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress
from sqlalchemy.exc import IntegrityError

from apps.recommend.embeddings import embed_pending
from apps.recommend.imports import (
    ImportFileError,
    ImportProgress,
    import_event_file,
    import_item_file,
)
from apps.recommend.settings import get_recommend_settings
from core.settings import Settings
from core.storage import get_session_factory
from textsuite.cli.common import database_errors, fail, output, settings

app = typer.Typer(help="The recommender.", no_args_is_help=True)

FileArgument = Annotated[Path, typer.Argument(help="JSON Lines or CSV (with a header row)")]


@contextmanager
def _importing(file: Path, current: Settings) -> Iterator[ImportProgress]:
    """A progress bar over the import's two passes; fails with a message where the file cannot
    be read, has bad lines, or the database is down or not migrated."""
    try:
        with database_errors(current), Progress(console=output(), transient=True) as bar:
            task = bar.add_task(f"checking {file.name}", total=2.0)

            def told(phase: str, share: float) -> None:
                done = share if phase == "checking" else 1.0 + share
                bar.update(task, description=f"{phase} {file.name}", completed=done)

            yield told
    except OSError as exc:
        fail(f"cannot read {file}: {exc}")
    except ImportFileError as exc:
        fail(f"{file}: {exc}")


@app.command("import-items")
def import_items(
    file: FileArgument,
    embed: Annotated[bool, typer.Option(help="Embed new and changed items afterwards")] = True,
) -> None:
    """Add or update catalogue items from a file of any length (keyed by id): the
    whole file is read before anything is stored, then stored a chunk at a time."""
    current, recommend = settings(), get_recommend_settings()
    factory = get_session_factory(current.database_url)
    with _importing(file, current) as progress:
        try:
            report = import_item_file(factory, file, size=recommend.import_chunk, progress=progress)
        except ImportFileError as exc:
            if embed and exc.stored:  # what was stored before the bad line, embedded still
                embed_catalogue()
            raise
    typer.echo(
        f"items: {report.created} created, {report.updated} updated, "
        f"{report.unchanged} unchanged from {file}"
    )
    if embed and report.to_embed:
        embed_catalogue()


@app.command("import-events")
def import_events(file: FileArgument) -> None:
    """Record user events from a file of any length (idempotent by event_id): the whole file
    is checked before anything is stored, then stored a chunk at a time."""
    current, recommend = settings(), get_recommend_settings()
    factory = get_session_factory(current.database_url)
    try:
        with _importing(file, current) as progress:
            report = import_event_file(
                factory, file, recommend.ratings(), size=recommend.import_chunk, progress=progress
            )
    except IntegrityError:
        fail(f"{file}: another process stored some of these events meanwhile; run it again")
    typer.echo(f"events: {report.stored} stored, {report.duplicates} already there")


@app.command("embed")
def embed_catalogue() -> None:
    """Embed every item that has no vector from the current encoder, with progress."""
    current = settings()
    result = embed_pending(
        current,
        get_recommend_settings(),
        get_session_factory(current.database_url),
        show_progress=True,
    )
    typer.echo(f"embedded {result['embedded']} items with {result['encoder']}")
