"""Dependencies of the sentiment routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request, status

from apps.sentiment.service import SentimentService


async def get_service(request: Request) -> SentimentService:
    return request.app.state.sentiment


ServiceDep = Annotated[SentimentService, Depends(get_service)]


# `?purge=true` on a delete that would take alerts with it.
PurgeQuery = Annotated[bool, Query(description="Delete its alerts with it")]


def keep_alerts(what: str, alerts: int, purge: bool, *, instead: str) -> None:
    """A 409 for a delete that would take `alerts` alerts with it, unless `purge`: they are
    the team's record of what happened. `instead`: how to stop `what` and keep them."""
    if alerts and not purge:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"{what} has {alerts} alert(s), which deleting it would delete too; {instead} to "
            "stop it and keep them, or delete with purge=true",
        )
