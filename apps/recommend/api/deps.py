"""Dependencies of the recommender routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from apps.recommend.imports import ImportFileError
from apps.recommend.service import RecommendService


async def get_service(request: Request) -> RecommendService:
    return request.app.state.recommend


ServiceDep = Annotated[RecommendService, Depends(get_service)]

# Bulk import bodies: the file as is.
FILE_BODY = {
    "requestBody": {
        "required": True,
        "description": "JSON Lines (one object per line) or CSV with a header row, UTF-8.",
        "content": {
            media: {"schema": {"type": "string"}}
            for media in ("application/x-ndjson", "application/jsonl", "text/csv")
        },
    }
}


def bad_lines(exc: ImportFileError) -> HTTPException:
    """422 naming each refused line of an import file and why."""
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        {
            "message": str(exc),
            "errors": [{"line": n, "error": e} for n, e in exc.errors],
            "stored": exc.stored,  # the file's first records stored before a late refusal
        },
    )
