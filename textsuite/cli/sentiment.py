"""`textsuite sentiment`: the watchlist, replaying news files and the stream consumer."""

from __future__ import annotations

import datetime as dt
import signal
import threading
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress
from rich.table import Table
from sqlalchemy import select

from apps.sentiment import stream
from apps.sentiment.entities import (
    RELINK_HISTORY,
    link_recent_articles,
    read_watchlist,
    unlink_unmentioned,
    upsert_entities,
)
from apps.sentiment.feeds import poll_due_feeds, poll_feed
from apps.sentiment.models import Entity, Feed
from apps.sentiment.replay import (
    ReplayFileError,
    check_articles,
    iter_articles,
    readable_twice,
    replay,
)
from apps.sentiment.scoring import RESCORE_JOB, NoSentimentModel
from apps.sentiment.service import NotDurable, SentimentService
from apps.sentiment.settings import get_sentiment_settings
from core.jobs import JobDispatcher
from core.storage import get_session_factory
from core.storage.base import utcnow
from textsuite.cli.common import database, fail, id_table, output, settings
from textsuite.cli.jobs import submit_and_follow
from textsuite.cli.train import WaitOption
from workers.dispatch import InProcessDispatcher, create_dispatcher

app = typer.Typer(help="The news sentiment monitor.", no_args_is_help=True)
watchlist = typer.Typer(help="The companies the monitor tracks.", no_args_is_help=True)
feeds = typer.Typer(help="RSS/Atom feeds to poll.", no_args_is_help=True)
app.add_typer(watchlist, name="watchlist")
app.add_typer(feeds, name="feeds")
console = output()
REPLAY_BACKOFF_S = 2.0
# How long a command that raised alerts waits for their notifications before it exits.
NOTIFY_DRAIN_S = 30.0


@watchlist.command("import")
def import_watchlist(
    file: Annotated[Path, typer.Argument(help="YAML list of {ticker, name, aliases, sector}")],
) -> None:
    """Add or update watchlist entries from a YAML file (by ticker)."""
    try:
        entries = read_watchlist(file)
    except (OSError, ValueError) as exc:
        fail(str(exc))
    since = utcnow() - RELINK_HISTORY
    with database(settings()) as session:
        saved = upsert_entities(session, entries)
        linked = sum(link_recent_articles(session, e, since) for e in saved)
        unlinked = sum(unlink_unmentioned(session, e, since) for e in saved)
    removed = f", {unlinked} removed (no longer mentioned)" if unlinked else ""
    typer.echo(
        f"watchlist: {len(entries)} entries imported from {file}; "
        f"{linked} links to the past week's articles{removed}"
    )


@watchlist.command("list")
def list_watchlist() -> None:
    """Print the watchlist."""
    with database(settings()) as session:
        entities = list(session.scalars(select(Entity).order_by(Entity.ticker)))
        table = Table("ticker", "name", "aliases", "sector", "active")
        for entity in entities:
            table.add_row(
                entity.ticker,
                entity.name,
                ", ".join(entity.aliases),
                entity.sector or "",
                "yes" if entity.active else "no",
            )
    console.print(table)


@app.command("replay")
def replay_file(
    file: Annotated[Path, typer.Argument(help="JSONL, one article object per line")],
    batch_size: Annotated[int, typer.Option(min=1, max=1000)] = 64,
) -> None:
    """Send a file of articles through the monitor.

    With TEXTSUITE_SENTIMENT_STREAM_URL set they go onto the stream (`textsuite sentiment
    consume` scores them); otherwise they are stored and scored in this process.
    """
    try:
        with readable_twice(file) as source:
            _replay(file, source, batch_size)
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror or exc}")


def _replay(file: Path, source: Path, batch_size: int) -> None:
    current = settings()
    try:
        count = check_articles(source)  # a bad line refuses the file before anything is sent
    except ReplayFileError as exc:
        fail(str(exc).replace(str(source), str(file)))
    dispatcher = create_dispatcher(current)  # notifications of alerts the replay raises
    service = SentimentService.create(
        current, get_sentiment_settings(), get_session_factory(current.database_url), dispatcher
    )
    if service.stream_client is not None:

        def send(chunk: list) -> object:
            while True:  # a replay waits for the consumers rather than fail or drop
                try:
                    return service.publish_now(chunk)
                except stream.StreamFull as exc:
                    console.print(f"[yellow]{exc}; waiting for the consumers[/yellow]")
                    time.sleep(REPLAY_BACKOFF_S)

        where = f"stream {service.settings.stream_name}"
    else:
        where = "this process (no stream configured)"

        def send(chunk: list) -> object:
            results = service.ingestor.ingest(chunk)
            duplicates.append(sum(result.duplicate for result in results))
            return results

    duplicates: list[int] = []  # per batch scored here (a stream's consumers count theirs)
    try:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(f"replaying into {where}", total=count)
            sent = replay(
                iter_articles(source),
                send,
                batch_size=batch_size,
                on_batch=lambda n: progress.advance(task, n),
            )
    except (NoSentimentModel, NotDurable) as exc:
        fail(str(exc))
    finally:
        service.close()
        _close(dispatcher)
    if sent != count:
        fail(f"{file} changed while it was replayed: {count} articles checked, {sent} sent")
    seen = f" ({sum(duplicates)} of them stored before)" if duplicates else ""
    typer.echo(f"replayed {sent} articles from {file} into {where}{seen}")


@app.command()
def consume(
    name: Annotated[str | None, typer.Option(help="Consumer name (default host-pid)")] = None,
    block_ms: Annotated[int, typer.Option(min=10, help="Wait this long for new messages")] = 1000,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=1, max=65535, help="Serve Prometheus metrics (stream lag and backlog) on this port"
        ),
    ] = None,
) -> None:
    """Score articles from the ingest stream until interrupted (a scoring worker)."""
    current, sentiment = settings(), get_sentiment_settings()
    if sentiment.stream_url is None:
        fail("no stream configured: set TEXTSUITE_SENTIMENT_STREAM_URL (a redis:// URL)")
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port)
    factory = get_session_factory(current.database_url)
    dispatcher = create_dispatcher(current)  # alert notifications go out as jobs
    service = SentimentService.create(current, sentiment, factory, dispatcher)
    assert service.stream_client is not None
    consumer = stream.StreamConsumer(
        service.stream_client, service.ingestor, factory, sentiment, name=name
    )
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: consumer.stop())
    typer.echo(
        f"consumer {consumer.name} reading {sentiment.stream_name} ({sentiment.stream_group})"
    )
    stats = consumer.run(block_ms)
    service.close()
    _close(dispatcher)
    typer.echo(
        f"stopped: {stats.ingested} ingested, {stats.duplicates} duplicates, "
        f"{stats.reclaimed} reclaimed, {stats.dead_lettered} dead-lettered"
    )


@app.command()
def rescore(
    since: Annotated[
        dt.datetime | None,
        typer.Option(help="Only articles published at or after this time (UTC)"),
    ] = None,
    wait: WaitOption = True,
) -> None:
    """Score stored articles again with the production model: those an older version scored
    (a job on the gpu queue; alerts already raised stay as they were)."""
    when = since.replace(tzinfo=dt.UTC) if since and since.tzinfo is None else since
    submit_and_follow(RESCORE_JOB, {"since": when.isoformat() if when else None}, wait)


def _close(dispatcher: JobDispatcher) -> None:
    """In-process jobs: let the alerts' notifications go out (for up to `NOTIFY_DRAIN_S`), and
    say what is left for a later process to send."""
    if isinstance(dispatcher, InProcessDispatcher):
        left = dispatcher.close(drain_s=NOTIFY_DRAIN_S)
        if left:
            console.print(
                f"[yellow]{left} notification job(s) not sent yet (a target slow or down): "
                "`textsuite serve` or a worker sends them later (GET /v1/jobs)[/yellow]"
            )
    elif (close := getattr(dispatcher, "close", None)) is not None:
        close()


@feeds.command("add")
def add_feed(
    url: Annotated[str, typer.Argument(help="The feed's URL")],
    name: Annotated[str | None, typer.Option(help="Source name of its articles")] = None,
) -> None:
    """Add an RSS/Atom feed to poll."""
    if not url.startswith(("http://", "https://")):
        fail(f"{url!r} is not an http(s) URL")
    with database(settings()) as session:
        if session.scalar(select(Feed).where(Feed.url == url)) is not None:
            fail(f"{url} is already polled")
        session.add(Feed(url=url, name=name))
    typer.echo(f"feed added: {url}")


@feeds.command("list")
def list_feeds() -> None:
    """The feeds, with the outcome of their last poll."""
    with database(settings()) as session:
        # The id is what the API's poll and delete take.
        table = id_table("id", "url", "name", "last polled", "status", "error")
        for feed in session.scalars(select(Feed).order_by(Feed.url)):
            table.add_row(
                str(feed.id),
                feed.url,
                feed.name or "",
                feed.last_polled_at.isoformat(timespec="seconds") if feed.last_polled_at else "",
                str(feed.last_status or ""),
                feed.last_error or "",
            )
    console.print(table)


@app.command()
def poll(
    interval_s: Annotated[float, typer.Option(min=10, help="Seconds between rounds")] = 300,
    once: Annotated[bool, typer.Option(help="Poll every feed once, then exit")] = False,
) -> None:
    """Poll the feeds (conditional GET) and ingest new entries: each one not polled for
    INTERVAL_S seconds, by this process or a service's (`TEXTSUITE_SENTIMENT_FEED_POLL_S`);
    with --once, every feed now."""
    current = settings()
    factory = get_session_factory(current.database_url)
    dispatcher = create_dispatcher(current)
    service = SentimentService.create(current, get_sentiment_settings(), factory, dispatcher)
    stopping = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: stopping.set())
    try:
        while not stopping.is_set():
            try:
                if once:
                    with factory() as session:
                        feed_ids = list(session.scalars(select(Feed.id)))
                    ingest = service.ingest_feed_entries
                    results = [poll_feed(factory, f, ingest) for f in feed_ids]
                else:
                    results = poll_due_feeds(
                        factory,
                        service.ingest_feed_entries,
                        interval_s,
                        ready=service.ingestor.scorer.served,
                    )
            except NoSentimentModel as exc:
                fail(str(exc))
            for result in results:
                typer.echo(
                    f"{result.feed_url}: {result.status or 'unreachable'}, "
                    f"{result.entries} entries, {result.ingested} new"
                    + (f" ({result.error})" if result.error else "")
                )
            if once:
                break
            stopping.wait(min(interval_s, 60.0))
    finally:
        service.close()
        _close(dispatcher)
