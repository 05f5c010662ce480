"""Dependencies of the sentiment routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from apps.sentiment.service import SentimentService


async def get_service(request: Request) -> SentimentService:
    return request.app.state.sentiment


ServiceDep = Annotated[SentimentService, Depends(get_service)]
