"""Long-running commands and set-up: serve, worker, migrate, demo."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer
import uvicorn
from alembic.util.exc import CommandError as AlembicCommandError

import migrations
from core.jobs import MODEL_QUEUES, QUEUES
from core.security import authenticate, create_api_key
from core.settings import Scheduler, Settings
from core.storage.models import Scope
from textsuite.cli.common import database, database_errors, fail, settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
OWNED_ENV = "TEXTSUITE_OWNS_METRICS_DIR"  # the folder was made for this worker: removed at exit


def serve(
    host: Annotated[str | None, typer.Option(help="Bind address [default: TEXTSUITE_HOST]")] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port [default: TEXTSUITE_PORT]")
    ] = None,
) -> None:
    """Serve the HTTP API (and, without a broker, run jobs in this process)."""
    current = settings()
    uvicorn.run(
        "textsuite.service:create_service",
        factory=True,
        host=host or current.host,
        port=port if port is not None else current.port,
        log_config=None,
        proxy_headers=True,
    )


def worker(
    queues: Annotated[
        str, typer.Option(help="Comma-separated queues to consume: default, gpu, inference")
    ] = "default",
    pool: Annotated[
        str | None,
        typer.Option(
            help="Celery pool [default: solo for gpu and inference (CUDA-safe), prefork otherwise]"
        ),
    ] = None,
    concurrency: Annotated[int | None, typer.Option(min=1, help="Processes or threads")] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Expose this worker's Prometheus metrics on this port"),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            help="Celery node name, NAME@host [default: the queues, as gpu@host]; give "
            "workers of the same queues on one host their own (gpu0, gpu1)"
        ),
    ] = None,
) -> None:
    """Run a Celery worker against TEXTSUITE_BROKER_URL.

    A `gpu` worker uses the `solo` pool: one process, one job at a time, models loaded lazily,
    and CUDA never initialised before a fork. Run one per GPU. It takes `inference` jobs too,
    between training jobs; an `inference` worker of its own (solo too) takes them at once, so
    new catalogue items never wait behind training.
    """
    current = settings()
    if current.broker_url is None:
        fail(
            "no broker configured: set TEXTSUITE_BROKER_URL=redis://host:6379/0 "
            "(without a broker, `textsuite serve` runs jobs in its own process)"
        )
    names = worker_queues(queues)
    model_queues = sorted(MODEL_QUEUES & set(names))
    if pool is None:
        pool = "solo" if model_queues else "prefork"
    if pool not in {"solo", "threads", "prefork"}:
        fail(f"unknown pool {pool!r}; expected solo, threads or prefork")
    if model_queues and pool == "prefork":
        fail(
            f"the {' and '.join(model_queues)} queue(s) need the solo or threads pool: "
            "prefork forks after CUDA starts"
        )
    if metrics_port is not None:
        _serve_worker_metrics(metrics_port, pool)

    from workers.celery_app import create_celery_app

    argv = ["worker", "--queues", ",".join(names), "--pool", pool, "--loglevel", current.log_level]
    argv += ["--hostname", node_name(queues, name)]
    if pool == "solo":
        argv += ["--concurrency", "1"]
    elif concurrency is not None:
        argv += ["--concurrency", str(concurrency)]
    create_celery_app(current, periodic=True).worker_main(argv)


def node_name(queues: str, name: str | None) -> str:
    """The worker's Celery node name: `name`, or the queues asked for ("gpu", "default-gpu"),
    at this host (Celery's `%h`) unless `name` names a host itself. Celery's own default,
    `celery@host`, is the same for every worker on a host."""
    if name is not None and not name.strip():
        fail("--name is blank")
    base = name.strip() if name else "-".join(q.strip() for q in queues.split(",") if q.strip())
    return base if "@" in base else f"{base}@%h"


def worker_queues(option: str) -> list[str]:
    """The queues a worker consumes: those named, and `inference` wherever `gpu` is (its jobs
    then run between training jobs, so nothing sits unconsumed where no `inference` worker
    runs; one that does takes them at once)."""
    names = [name.strip() for name in option.split(",") if name.strip()]
    unknown = sorted(set(names) - set(QUEUES))
    if unknown or not names:
        fail(f"unknown queue(s) {unknown or names}; expected some of {', '.join(QUEUES)}")
    if "gpu" in names and "inference" not in names:
        names.append("inference")
    return names


def beat() -> None:
    """Queue the periodic work for the `default` workers on its schedule (with
    TEXTSUITE_SCHEDULER=beat): resolving quiet alerts, polling feeds, sending again lost jobs,
    scheduled retraining. One is enough; a second only doubles harmless ticks."""
    current = settings()
    if current.broker_url is None:
        fail("no broker configured: set TEXTSUITE_BROKER_URL=redis://host:6379/0")
    if current.scheduler is not Scheduler.BEAT:
        fail(
            "TEXTSUITE_SCHEDULER is 'api': the API processes run the periodic work themselves. "
            "Set TEXTSUITE_SCHEDULER=beat for the API processes, the workers and this command"
        )
    from workers.celery_app import create_celery_app

    app = create_celery_app(current, periodic=True)
    for name, entry in app.conf.beat_schedule.items():
        typer.echo(f"every {entry['schedule']:g} s: {name}")
    # The in-memory scheduler: every tick's work checks the database for what is due, so
    # nothing is lost when a restarted beat forgets when it last sent one.
    argv = ["beat", "--scheduler", "celery.beat:Scheduler", "--loglevel", current.log_level]
    app.start(argv)


def _serve_worker_metrics(port: int, pool: str) -> None:
    """Serve this worker's Prometheus metrics on `port`. A prefork worker runs its jobs in
    child processes, whose metrics reach the parent's endpoint only through prometheus-client's
    multiprocess mode; that mode is chosen when the library is imported, so the command starts
    itself again with `PROMETHEUS_MULTIPROC_DIR` set (same process id, fresh interpreter)."""
    from prometheus_client import start_http_server

    if pool != "prefork":
        start_http_server(port)
        return
    folder = os.environ.get(MULTIPROC_ENV)
    if folder is None:  # a fresh folder per worker start: no other process's old values
        os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="textsuite-worker-metrics-")
        os.environ[OWNED_ENV] = "1"
        os.execv(sys.executable, [sys.executable, "-m", "textsuite", *sys.argv[1:]])
    if os.environ.pop(OWNED_ENV, None):
        atexit.register(shutil.rmtree, folder, True)
    else:  # a folder of the operator's, one per worker: what an earlier run left is stale
        for stale in Path(folder).glob("*.db"):
            if not stale.stem.endswith(f"_{os.getpid()}"):
                stale.unlink(missing_ok=True)
    from celery.signals import worker_process_shutdown
    from prometheus_client import CollectorRegistry, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    start_http_server(port, registry=registry)

    def forget_gauges(pid: int | None = None, **_: object) -> None:
        multiprocess.mark_process_dead(pid or os.getpid())  # a replaced child's live gauges

    worker_process_shutdown.connect(forget_gauges, weak=False)


def migrate(
    revision: Annotated[str, typer.Option(help="Target revision")] = "head",
    downgrade: Annotated[bool, typer.Option(help="Downgrade to --revision instead")] = False,
) -> None:
    """Apply the database migrations (PostgreSQL or SQLite)."""
    current = settings()
    if downgrade and revision == "head":
        fail("give the revision to downgrade to, e.g. --revision base")
    try:
        with database_errors(current):
            if downgrade:
                migrations.downgrade(current.database_url, revision)
            else:
                migrations.upgrade(current.database_url, revision)
            now = migrations.current_revision(current.database_url)
    except AlembicCommandError as exc:  # an unknown revision
        fail(f"cannot migrate to {revision!r}: {exc}")
    typer.echo(f"database at revision {now or 'base (no tables)'}")


def _demo_key(path: Path) -> str:
    """A reusable admin key for the demo, kept in a file only the owner can read."""
    current = settings()
    with database(current) as session:
        if path.exists():
            key = path.read_text().strip()
            if authenticate(session, key) is not None:
                return key
        _record, key = create_api_key(session, "demo", [Scope.ADMIN])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(key + "\n")
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    return key


def _demo_support(current: Settings) -> None:
    """Load the demo helpdesk, and train its intent model unless one is in production."""
    from apps.support.demo import load_demo
    from apps.support.settings import get_support_settings
    from core.ml.versions import production_version
    from textsuite.cli.jobs import submit_and_follow

    with database(current) as session:
        report = load_demo(session)
        trained = production_version(session, get_support_settings().model_name) is not None
    typer.echo(f"support catalogue: {report.summary()}")
    if trained and not report.created and not report.updated and not report.examples_added:
        typer.echo("support intent model: already trained on this catalogue")
        return
    typer.echo("training the support bot on the demo catalogue (a few minutes on a CPU)...")
    submit_and_follow("support.train", {"arguments": {"strategy": "sentence"}})


def _demo_sentiment(current: Settings) -> None:
    """Load the demo watchlist, train the sentiment model unless one is in production, and
    replay the demo news (shifted to end now) through the monitor."""
    from apps.sentiment.demo import load_watchlist, news_until_now
    from apps.sentiment.replay import replay
    from apps.sentiment.service import SentimentService
    from apps.sentiment.settings import get_sentiment_settings
    from apps.sentiment.training import TWITTER_FOLDER
    from core.ml.versions import production_version
    from core.storage import get_session_factory
    from textsuite.cli.jobs import submit_and_follow

    sentiment = get_sentiment_settings()
    with database(current) as session:
        companies = load_watchlist(session)
        trained = production_version(session, sentiment.model_name) is not None
    typer.echo(f"sentiment watchlist: {companies} companies, default alert rules installed")
    if trained:
        typer.echo("sentiment model: already trained")
    else:
        twitter = (current.data_dir / TWITTER_FOLDER / "train.csv").exists()
        if not twitter:
            typer.echo(
                f"note: {current.data_dir.resolve() / TWITTER_FOLDER} not found (set "
                "TEXTSUITE_DATA_DIR to the data folder): the sentiment model learns from the "
                "demo headlines only and scores news less well",
                err=True,
            )
        typer.echo(
            "training the sentiment model on "
            + ("the Twitter financial news set and " if twitter else "")
            + "the demo headlines (a few minutes on a CPU)..."
        )
        # One epoch at the strategy's own rate keeps the demo quick; `textsuite train
        # sentiment` trains to convergence at the sentiment defaults.
        arguments = {"strategy": "sentence", "epochs": 1, "learning_rate": 2e-5}
        submit_and_follow(
            "sentiment.train", {"arguments": arguments, "include_twitter": twitter}, wait=True
        )
    factory = get_session_factory(current.database_url)
    service = SentimentService.create(
        current, sentiment.model_copy(update={"stream_url": None}), factory
    )
    news = news_until_now()
    try:
        with typer.progressbar(length=len(news), label="replaying the demo news") as bar:
            replay(news, service.ingestor.ingest, on_batch=bar.update)
    finally:
        service.close()


def _demo_recommend(current: Settings) -> None:
    """Load the demo shop's catalogue and events, tune the item encoder on the shoppers'
    behaviour unless a tuned one is in production (it serves only if its held-out retrieval
    is not worse than the base model's), and embed the items not embedded yet."""
    from apps.recommend.demo import load_demo
    from apps.recommend.embeddings import embed_pending
    from apps.recommend.settings import get_recommend_settings
    from core.ml.versions import production_version
    from core.storage import get_session_factory
    from textsuite.cli.jobs import submit_and_follow

    recommend = get_recommend_settings()
    with database(current) as session:
        loaded = load_demo(session)
        tuned = production_version(session, recommend.model_name) is not None
    typer.echo(
        f"recommender: {loaded.items.created + loaded.items.updated + loaded.items.unchanged} "
        f"items, {loaded.events.stored} new events ({loaded.events.duplicates} already stored)"
    )
    if tuned:
        typer.echo("recommender item encoder: already tuned")
    else:
        typer.echo("tuning the recommender's item encoder on the shoppers' behaviour...")
        try:  # one epoch on the commonest pairs keeps the demo quick
            submit_and_follow("recommend.train", DEMO_RECOMMEND_TRAINING)
        except typer.Exit:  # the base encoder serves: the demo goes on without it
            typer.echo("recommender: tuning failed (above); the base encoder serves", err=True)
    factory = get_session_factory(current.database_url)
    result = embed_pending(current, recommend, factory, show_progress=True)
    typer.echo(f"recommender: embedded {result['embedded']} items with {result['encoder']}")


DEMO_RECOMMEND_TRAINING = {"arguments": {"epochs": 1, "max_length": 64}, "max_pairs": 800}


def _support_curl(base: str, key: str, text: str) -> str:
    body = json.dumps({"conversation_id": "demo-1", "customer_id": "cust-1001", "text": text})
    return (
        f"  curl -s -X POST {base}/v1/support/messages \\\n"
        f"       -H 'X-API-Key: {key}' -H 'Content-Type: application/json' \\\n"
        f"       -d '{body}'"
    )


def demo(
    host: Annotated[str | None, typer.Option(help="Bind address")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Port")] = None,
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Set up, print, and exit")] = False,
) -> None:
    """Set up the demo on SQLite (catalogue, trained models) and serve it on :8000."""
    current = settings()
    migrations.upgrade(current.database_url)
    key = _demo_key(current.var_dir / "demo-api-key")
    _demo_support(current)
    _demo_sentiment(current)
    _demo_recommend(current)
    base = f"http://{host or current.host}:{port if port is not None else current.port}"
    typer.echo(
        f"""
textsuite demo is ready.

  API docs     {base}/docs
  health       {base}/healthz   readiness {base}/readyz   metrics {base}/metrics
  admin key    {key}   (also in {current.var_dir / "demo-api-key"})

Support bot (Trailhead Outfitters, an outdoor-gear shop; customer cust-1001 is Maya):

  # an answer, with Maya's name and her order number filled in
{_support_curl(base, key, "hi, where is my order TH-104233?")}

  # a handoff: she asks for a person
{_support_curl(base, key, "I want to speak to a real person please")}

  # what the bot handed off or was unsure about, waiting for a label
  curl -s {base}/v1/support/review -H 'X-API-Key: {key}'

News sentiment monitor (12 fictional companies, five days of news; Halvorsen Biotherapeutics,
HLVB, has a bad Thursday):

  dashboard    {base}/dashboard   (sign in with the key above)

  # the alerts the replay raised, and the articles behind one
  curl -s '{base}/v1/sentiment/alerts?ticker=HLVB' -H 'X-API-Key: {key}'
  curl -s '{base}/v1/sentiment/articles?ticker=HLVB&label=negative&limit=5' -H 'X-API-Key: {key}'

  # score a headline now (it appears on the dashboard's HLVB chart)
  curl -s -X POST {base}/v1/sentiment/articles -H 'X-API-Key: {key}' \\
       -H 'Content-Type: application/json' \\
       -d '{{"title": "Halvorsen Biotherapeutics wins approval for Travexa on appeal"}}'

Recommender (the same shop's 312 products and 400 shoppers' last 60 days of events):

  # recommended for shopper u0002, with a reason per item; the id in the reply goes with
  # feedback events (POST /v1/recommend/events with "recommendation_id")
  curl -s '{base}/v1/recommend/users/u0002?k=5' -H 'X-API-Key: {key}'

  # similar to a four-season tent, and free-text search
  curl -s '{base}/v1/recommend/items/OG-0004/similar?k=5' -H 'X-API-Key: {key}'
  curl -s -X POST {base}/v1/recommend/query -H 'X-API-Key: {key}' \\
       -H 'Content-Type: application/json' \\
       -d '{{"text": "a warm sleeping bag for winter camping", "k": 5}}'
"""
    )
    if not no_serve:
        serve(host=host, port=port)
