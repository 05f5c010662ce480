"""`textsuite ingest`: load a file into an app (the same commands as under each app's name)."""

from __future__ import annotations

import typer

from textsuite.cli import recommend, sentiment, support

app = typer.Typer(
    help="Load files into the apps: news, catalogue items, user events, a support catalogue.",
    no_args_is_help=True,
)
app.command("news")(sentiment.replay_file)
app.command("items")(recommend.import_items)
app.command("events")(recommend.import_events)
app.command("catalogue")(support.import_file)
