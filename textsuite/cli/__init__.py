"""`textsuite`: one command line for serving, workers, migrations, keys, jobs and the demo."""

from __future__ import annotations

import sys

import typer

from core.settings import SettingsError
from textsuite.cli import (
    bench,
    evaluate,
    ingest,
    jobs,
    keys,
    models,
    recommend,
    run,
    sentiment,
    support,
    train,
)

app = typer.Typer(
    name="textsuite",
    help="Support bot, news sentiment monitor and recommender on one shared model core.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _check_configuration() -> None:
    # Every setting is read before any command runs, so a bad value stops each command with
    # the message naming its variable, as `serve` does, whatever settings the command uses.
    from apps.recommend.settings import load_recommend_settings
    from apps.sentiment.settings import load_sentiment_settings
    from apps.support.settings import load_support_settings
    from core.settings import load_settings

    for load in (load_settings, load_support_settings, load_sentiment_settings,
                 load_recommend_settings):  # fmt: skip
        load()


app.command()(run.serve)
app.command()(run.worker)
app.command()(run.beat)
app.command()(run.migrate)
app.command()(run.demo)
app.command()(bench.bench)
app.add_typer(keys.app, name="keys")
app.add_typer(jobs.app, name="jobs")
app.add_typer(models.app, name="models")
app.add_typer(train.app, name="train")
app.add_typer(support.app, name="support")
app.add_typer(sentiment.app, name="sentiment")
app.add_typer(recommend.app, name="recommend")
app.add_typer(evaluate.app, name="eval")
app.add_typer(ingest.app, name="ingest")


def main() -> None:
    try:
        app()
    except SettingsError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
