"""`textsuite models`: list, inspect, compare, promote and roll back model versions."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy.orm import Session

from core.ml import versions
from core.ml.loading import ModelLoadError
from core.ml.serving import commit_if_loadable
from core.settings import Settings
from core.storage.engine import get_session_factory
from core.storage.models import ModelVersion
from textsuite.cli.common import database, fail, output, settings

app = typer.Typer(
    help="List, inspect, compare, promote and roll back model versions.", no_args_is_help=True
)
console = output()


def _headline(metrics: dict[str, object], name: str) -> str:
    value = metrics.get(name)
    return f"{name} {value:.4f}" if isinstance(value, int | float) else "-"


@app.command("list")
def list_models(name: Annotated[str | None, typer.Argument(help="Only this model")] = None) -> None:
    """Every version with its stage and validation metric."""
    table = Table("model", "version", "stage", "task", "metric", "base model", "created")
    for column in table.columns[:4]:
        column.no_wrap = True
    with database(settings()) as session:
        for version in versions.list_versions(session, name):
            metric = version.config.get("primary_metric", "macro_f1")
            table.add_row(
                version.name,
                f"v{version.version}",
                version.stage.value,
                version.task,
                _headline(version.metrics, metric),
                version.base_model,
                f"{version.created_at:%Y-%m-%d %H:%M}",
            )
    console.print(table)


@app.command()
def show(
    name: Annotated[str, typer.Argument(help="Model name")],
    version: Annotated[int | None, typer.Option(help="Version number [default: newest]")] = None,
) -> None:
    """A version's metrics, configuration and artifact folder."""
    with database(settings()) as session:
        try:
            found = versions.get_version(session, name, version)
        except versions.VersionNotFound as exc:
            fail(str(exc))
        console.print_json(
            json.dumps(
                {
                    "name": found.name,
                    "version": found.version,
                    "stage": found.stage.value,
                    "task": found.task,
                    "base_model": found.base_model,
                    "artifact_path": found.artifact_path,
                    "metrics": found.metrics,
                    "config": found.config,
                    "created_at": found.created_at.isoformat(),
                }
            )
        )


@app.command()
def compare(
    name: Annotated[str, typer.Argument(help="Model name")],
    numbers: Annotated[
        list[int] | None,
        typer.Argument(help="Versions [default: production and the newest other version]"),
    ] = None,
    classes: Annotated[
        int, typer.Option(min=0, help="Show the classes whose F1 moved most, this many")
    ] = 10,
) -> None:
    """Versions side by side: validation metrics (change against the first version), the
    classes that moved most, the training parameters that differ."""
    with database(settings()) as session:
        try:
            comparison = versions.compare(session, name, numbers)
        except (versions.VersionNotFound, ValueError) as exc:
            fail(str(exc))
    pairs = zip(comparison.numbers, comparison.stages, strict=True)
    heads = [f"v{number} ({stage})" for number, stage in pairs]
    table = Table("metric", *heads, title=f"{name}: validation metrics")
    for metric, values in comparison.metrics.items():
        label = f"{metric} (promotion)" if metric == comparison.primary_metric else metric
        table.add_row(label, *_with_change(values))
    console.print(table)
    moved = comparison.largest_class_changes(classes)
    if moved:
        per_class = Table("class", *heads, title="F1 per class, largest changes first")
        for label, _change in moved:
            per_class.add_row(label, *_with_change(comparison.per_class_f1[label]))
        console.print(per_class)
    if comparison.params:
        params = Table("training parameter", *heads, title="parameters that differ")
        for key, values in comparison.params.items():
            params.add_row(key, *(json.dumps(value) for value in values))
        console.print(params)
    for note in comparison.notes:
        console.print(f"note: {note}")


def _with_change(values: list[float | None]) -> list[str]:
    """Each value, and after the first its change against the first."""
    first = values[0]
    cells = []
    for i, value in enumerate(values):
        if value is None:
            cells.append("-")
        elif i == 0 or first is None:
            cells.append(f"{value:.4g}")
        else:
            cells.append(f"{value:.4g} ({value - first:+.4g})")
    return cells


@app.command()
def promote(
    name: Annotated[str, typer.Argument(help="Model name")],
    version: Annotated[int | None, typer.Option(help="Version number [default: newest]")] = None,
    force: Annotated[bool, typer.Option(help="Promote even if its metric is worse")] = False,
) -> None:
    """Make a version production; refuses one that is worse unless --force."""
    current = settings()
    with database(current) as session:
        try:
            promoted = versions.promote(session, name, version, force=force)
        except (versions.VersionNotFound, versions.PromotionRefused) as exc:
            fail(str(exc))
        _fail_unless_loadable(session, promoted, current)
        typer.echo(f"{promoted.name} v{promoted.version} is in production")


@app.command()
def rollback(name: Annotated[str, typer.Argument(help="Model name")]) -> None:
    """Put back the version that was in production before the current one."""
    current = settings()
    with database(current) as session:
        try:
            restored = versions.rollback(session, name)
        except versions.VersionNotFound as exc:
            fail(str(exc))
        _fail_unless_loadable(session, restored, current)
        typer.echo(f"{restored.name} v{restored.version} is in production again")


def _fail_unless_loadable(session: Session, version: ModelVersion, current: Settings) -> None:
    """Files that do not load never reach production: the change is rolled back."""
    try:
        commit_if_loadable(session, version, current, get_session_factory(current.database_url))
    except ModelLoadError as exc:
        fail(str(exc))
