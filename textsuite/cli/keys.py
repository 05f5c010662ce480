"""`textsuite keys`: create, list and revoke API keys."""

from __future__ import annotations

import uuid
from typing import Annotated

import typer
from sqlalchemy import select

from core.security import create_api_key, parse_scopes, revoke_api_key
from core.storage.models import ApiKey, Scope
from textsuite.cli.common import database, fail, id_table, output, settings

app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)


@app.command()
def create(
    scope: Annotated[
        list[str],
        typer.Option(help=f"Scope to grant, repeatable: {', '.join(s.value for s in Scope)}"),
    ],
    name: Annotated[str, typer.Option(help="Who or what the key is for")] = "cli",
    rate_limit: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="Requests/s for this key per API process [default: TEXTSUITE_RATE_LIMIT_PER_S]",
        ),
    ] = None,
) -> None:
    """Create a key and print it once; only its hash is stored."""
    try:
        scopes = parse_scopes(scope)
    except ValueError as exc:
        fail(str(exc))
    with database(settings()) as session:
        record, key = create_api_key(session, name, scopes, rate_limit)
    typer.echo(key)
    typer.echo(
        f"# id {record.id}, scopes {', '.join(scopes)}: store it now, it is not kept", err=True
    )


@app.command("list")
def list_keys() -> None:
    """List keys (their ids and first characters, never the keys)."""
    # What `keys revoke` takes, and what tells keys apart, never wraps.
    columns = ("id", "name", "prefix", "scopes", "req/s", "created", "last used", "revoked")
    table = id_table(*columns, whole=("id", "name"))
    with database(settings()) as session:
        for key in session.scalars(select(ApiKey).order_by(ApiKey.created_at)):
            table.add_row(
                str(key.id),
                key.name,
                key.prefix + "…",
                ", ".join(key.scopes),
                "-" if key.rate_limit_per_s is None else f"{key.rate_limit_per_s:g}",
                f"{key.created_at:%Y-%m-%d %H:%M}",
                f"{key.last_used_at:%Y-%m-%d %H:%M}" if key.last_used_at else "-",
                f"{key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "-",
            )
    output().print(table)


@app.command()
def revoke(
    key_id: Annotated[uuid.UUID, typer.Argument(help="The key's id from `keys list`")],
) -> None:
    """Revoke a key: requests using it get 401 (running services trust a key they checked for up
    to TEXTSUITE_API_KEY_CACHE_S)."""
    with database(settings()) as session:
        already = session.scalar(select(ApiKey.revoked_at).where(ApiKey.id == key_id))
        record = revoke_api_key(session, key_id)
        if record is None:
            fail(f"no API key with id {key_id}")
    if already is not None:
        typer.echo(f"{key_id} was already revoked ({already:%Y-%m-%d %H:%M} UTC)")
    else:
        typer.echo(f"revoked {key_id}")
