"""The interactive API docs: Swagger UI at /docs and ReDoc at /redoc.

Their scripts and styles come from the installed `fastapi-offline` package (Swagger UI 5, which
reads OpenAPI 3.1), never from a CDN: deployments are often offline, and FastAPI's own pages
load from jsdelivr. Like /openapi.json the pages are open without a key: they show the schema,
no data; the "Authorize" button takes a key for trying the routes out.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, HTTPException, Request, status
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

STATIC = Path(fastapi_offline.__file__).resolve().parent / "static"
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}
ASSETS_URL = "/docs/static"
# The pages may load from this server only, and the browser enforces it. (ReDoc's bundle
# fetches Redocly's logo from their CDN; refused, ReDoc leaves the logo out.)
LOCAL_ONLY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline'",  # the pages' inline start-up script
        "style-src 'self' 'unsafe-inline'",  # styles the scripts write into the page
        "img-src 'self' data:",
        "worker-src 'self' blob:",  # ReDoc's search index
    ]
)

router = APIRouter(include_in_schema=False)


def _root_path(request: Request) -> str:
    """The prefix a proxy serves the app under, so that the pages' links work behind it."""
    return str(request.scope.get("root_path", "")).rstrip("/")


@router.get("/docs", response_class=HTMLResponse)
async def swagger_ui(request: Request) -> HTMLResponse:
    root, app = _root_path(request), request.app
    page = get_swagger_ui_html(
        openapi_url=f"{root}{app.openapi_url}",
        title=f"{app.title} - Swagger UI",
        swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
        oauth2_redirect_url=None,  # the API takes keys, not OAuth2
        swagger_ui_parameters=app.swagger_ui_parameters,
    )
    page.headers["Content-Security-Policy"] = LOCAL_ONLY
    return page


@router.get("/redoc", response_class=HTMLResponse)
async def redoc(request: Request) -> HTMLResponse:
    root, app = _root_path(request), request.app
    page = get_redoc_html(
        openapi_url=f"{root}{app.openapi_url}",
        title=f"{app.title} - ReDoc",
        redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
        with_google_fonts=False,
    )
    page.headers["Content-Security-Policy"] = LOCAL_ONLY
    return page


@router.get(f"{ASSETS_URL}/{{name}}")
def asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"no docs asset {name!r}; there are: {', '.join(ASSETS)}"
        )
    return FileResponse(
        STATIC / name, media_type=ASSETS[name], headers={"Cache-Control": "max-age=86400"}
    )
