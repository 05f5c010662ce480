"""`textsuite jobs`: list, inspect, follow and submit background jobs."""

from __future__ import annotations

import json
import time
import uuid
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from core import jobs
from core.settings import Settings
from core.storage import get_session_factory
from core.storage.models import Job, JobStatus
from textsuite.cli.common import database, fail, id_table, output, settings

app = typer.Typer(help="List, inspect, follow and submit background jobs.", no_args_is_help=True)
console = output()


@app.command("list")
def list_jobs(
    status: Annotated[JobStatus | None, typer.Option(help="Only jobs in this status")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
) -> None:
    """The most recent jobs."""
    # `jobs show` takes the whole id.
    table = id_table(
        "id", "kind", "queue", "status", "progress", "created", "error", whole=("id", "kind")
    )
    with database(settings()) as session:
        for job in jobs.list_jobs(session, status=status, limit=limit):
            table.add_row(
                str(job.id),
                job.kind,
                job.queue,
                job.status.value,
                f"{job.progress:.0%}",
                f"{job.created_at:%Y-%m-%d %H:%M:%S}",
                (job.error or "")[:60],
            )
    console.print(table)


def _load(current: Settings, job_id: uuid.UUID) -> Job:
    with database(current) as session:
        job = jobs.get_job(session, job_id)
    if job is None:
        fail(f"no job with id {job_id}")
    return job


def follow(current: Settings, job_id: uuid.UUID, poll_s: float = 0.5) -> Job:
    """Show a progress bar until the job finishes; return its final state."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[message]}"),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        job = _load(current, job_id)
        bar = progress.add_task(job.kind, total=1.0, message="")
        while True:
            job = _load(current, job_id)
            progress.update(
                bar,
                completed=job.progress,
                message=f"{job.status.value} {job.progress_message or ''}".strip(),
            )
            if job.status.finished:
                return job
            time.sleep(poll_s)


# Per-class tables a training job's result carries: `models show` prints them.
BULKY_METRICS = frozenset({"per_class", "confusion_matrix"})


def _without_bulky(value: object) -> object:
    if isinstance(value, dict):
        return {k: _without_bulky(v) for k, v in value.items() if k not in BULKY_METRICS}
    return value


def print_job(job: Job, *, brief: bool = False) -> None:
    """The job as JSON; `brief` leaves out a training result's per-class tables (a job that
    just ran, printed after its progress bar) and says where to find them."""
    result = _without_bulky(job.result) if brief else job.result
    console.print_json(
        json.dumps(
            {
                "id": str(job.id),
                "kind": job.kind,
                "queue": job.queue,
                "status": job.status.value,
                "progress": job.progress,
                "progress_message": job.progress_message,
                "attempts": job.attempts,
                "worker": job.worker,
                "heartbeat_at": job.heartbeat_at.isoformat() if job.heartbeat_at else None,
                "params": job.params,
                "result": result,
                "error": job.error,
                "created_at": job.created_at.isoformat(),
                "finished_at": job.finished_at.isoformat() if job.finished_at else None,
            }
        )
    )
    if brief and result != job.result and isinstance(job.result, dict):
        name, version = job.result.get("model_name"), job.result.get("version")
        where = (
            f"textsuite models show {name} --version {version}"
            if name and version
            else f"textsuite jobs show {job.id}"
        )
        console.print(f"per-class figures and the confusion matrix: {where}")


@app.command()
def show(
    job_id: Annotated[uuid.UUID, typer.Argument(help="The job's id")],
    watch: Annotated[bool, typer.Option(help="Follow progress until the job finishes")] = False,
) -> None:
    """A job's status, progress, result or failure reason."""
    current = settings()
    print_job(follow(current, job_id) if watch else _load(current, job_id))


@app.command()
def cancel(job_id: Annotated[uuid.UUID, typer.Argument(help="The job's id")]) -> None:
    """Cancel a job: a waiting one now, a running one at its next progress report."""
    current = settings()
    try:
        job = jobs.cancel_job(get_session_factory(current.database_url), job_id)
    except jobs.JobFinished as exc:
        fail(str(exc))
    if job is None:
        fail(f"no job with id {job_id}")
    if job.status is JobStatus.CANCELLED:
        typer.echo(f"job {job_id} cancelled")
    else:
        typer.echo(f"job {job_id} is asked to stop; it ends at its next progress report")


def _parse_params(pairs: list[str]) -> dict[str, object]:
    params: dict[str, object] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            fail(f"--param expects NAME=VALUE, got {pair!r}")
        try:
            params[name] = json.loads(raw)
        except json.JSONDecodeError:
            params[name] = raw
    return params


@app.command()
def submit(
    kind: Annotated[str, typer.Argument(help="A registered job kind, e.g. core.worker_info")],
    param: Annotated[list[str] | None, typer.Option(help="NAME=VALUE (JSON or text)")] = None,
    queue: Annotated[str | None, typer.Option(help="Override the kind's queue")] = None,
    idempotency_key: Annotated[str | None, typer.Option(help="Submit at most once per key")] = None,
    wait: Annotated[bool, typer.Option(help="Follow the job until it finishes")] = True,
) -> None:
    """Submit a job. Without a broker it runs here, in this process."""
    from workers.dispatch import create_dispatcher

    current = settings()
    dispatcher = create_dispatcher(current)
    try:
        job, created = jobs.submit_job(
            get_session_factory(current.database_url),
            dispatcher,
            kind,
            _parse_params(param or []),
            idempotency_key=idempotency_key,
            queue=queue,
        )
    except (jobs.UnknownJobKind, jobs.IdempotencyConflict, jobs.DispatchError, ValueError) as exc:
        # InvalidJobParams is a ValueError: its message lists each bad parameter.
        fail(str(exc))
    if not created:
        typer.echo(f"idempotency key already used: job {job.id}", err=True)
    if wait or current.jobs_inprocess:
        job = follow(current, job.id)
    print_job(job)
    if job.status in (JobStatus.FAILED, JobStatus.CANCELLED):
        raise typer.Exit(1)


@app.command()
def redispatch(
    older_than: Annotated[
        float, typer.Option(min=0, help="Only jobs untouched for this many seconds")
    ] = 60.0,
) -> None:
    """Send again the jobs whose message was lost (a broker restarted without persistence).

    The API does this by itself every few minutes (TEXTSUITE_JOB_REDISPATCH_AFTER_S); this is
    for right after a known broker loss. A job sent twice still runs once.
    """
    from workers.dispatch import create_dispatcher

    current = settings()
    if current.jobs_inprocess:
        fail("no broker is configured (TEXTSUITE_BROKER_URL): jobs run inside `textsuite serve`")
    dispatcher = create_dispatcher(current)
    try:
        sent = jobs.redispatch_stalled(
            get_session_factory(current.database_url),
            dispatcher,
            waiting_s=older_than,
            lease_s=current.job_lease_s,
        )
    finally:
        getattr(dispatcher, "close", lambda: None)()
    for job_id in sent:
        typer.echo(f"sent again: {job_id}")
    typer.echo(f"{len(sent)} jobs sent again")


def submit_and_follow(kind: str, params: dict[str, object], wait: bool = True) -> Job:
    """Submit a job and, unless told not to, show its progress until it finishes."""
    from workers.dispatch import create_dispatcher

    current = settings()
    try:
        job, _ = jobs.submit_job(
            get_session_factory(current.database_url), create_dispatcher(current), kind, params
        )
    except (jobs.InvalidJobParams, jobs.DispatchError) as exc:
        fail(str(exc))
    if not (wait or current.jobs_inprocess):
        typer.echo(f"submitted job {job.id}; follow it with `textsuite jobs show {job.id} --watch`")
        return job
    finished = follow(current, job.id)
    print_job(finished, brief=True)
    if finished.status in (JobStatus.FAILED, JobStatus.CANCELLED):
        raise typer.Exit(1)
    return finished
