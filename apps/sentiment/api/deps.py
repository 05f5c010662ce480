"""Dependencies of the sentiment routes."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from apps.sentiment.service import SentimentService
from core.validation import not_before_1970


async def get_service(request: Request) -> SentimentService:
    return request.app.state.sentiment


ServiceDep = Annotated[SentimentService, Depends(get_service)]


def check_time_bounds(*bounds: dt.datetime | None) -> None:
    """`since`/`until` query values: aware, and not before 1970 (a 422 saying which rule)."""
    for bound in bounds:
        if bound is None:
            continue
        if bound.tzinfo is None:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                "since/until need a time zone, e.g. 2026-11-26T13:00:00Z",
            )
        try:
            not_before_1970(bound)
        except ValueError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
