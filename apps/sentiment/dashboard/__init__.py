"""The monitor's dashboard: a page served by the app, behind a login with an API key.

Signing in with a key sets an HttpOnly, SameSite=Strict cookie holding a session signed for
that key (never the key itself), which the sentiment API accepts like the `X-API-Key` header
for 12 hours, or until the key is revoked; the page then reads the same JSON API as any client
and listens to the alert feed over server-sent events. Charts are plotly.js, served from the
installed `plotly` package.
"""

from __future__ import annotations

from pathlib import Path

import plotly
from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from pydantic import BaseModel, Field

from core.api.deps import KEY_COOKIE, SESSION_TTL_S, SessionDep, dashboard_view
from core.security import authenticate, session_key, session_token
from core.storage.models import Scope

STATIC = Path(__file__).resolve().parent / "static"
PLOTLY_JS = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
ASSETS = {
    "dashboard.js": "text/javascript",
    "login.js": "text/javascript",
    "dashboard.css": "text/css",
}

router = APIRouter(prefix="/dashboard", include_in_schema=False)
# The pages load nothing from elsewhere and run no inline script (what a slip in escaping an
# article's text would need), and no other site may frame them: the dashboard has buttons
# that act with the analyst's key. Plotly writes inline styles.
PAGE_HEADERS = {
    "Content-Security-Policy": "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data:",
            "frame-ancestors 'none'",
        ]
    )
}


def _page(name: str) -> HTMLResponse:
    return HTMLResponse((STATIC / name).read_text(encoding="utf-8"), headers=PAGE_HEADERS)


def _signed_in(request: Request, session: SessionDep) -> bool:
    token = request.cookies.get(KEY_COOKIE)
    record = dashboard_view(session_key(session, token)) if token else None
    return record is not None and record.grants(Scope.SENTIMENT)


@router.api_route("", methods=["GET", "HEAD"], response_class=HTMLResponse)
def dashboard(request: Request, session: SessionDep) -> Response:
    if not _signed_in(request, session):
        return RedirectResponse("/dashboard/login", status.HTTP_303_SEE_OTHER)
    return _page("dashboard.html")


@router.api_route("/login", methods=["GET", "HEAD"], response_class=HTMLResponse)
def login_page() -> HTMLResponse:
    return _page("login.html")


class Login(BaseModel):
    key: str = Field(min_length=1, max_length=200)


@router.post("/session", status_code=status.HTTP_204_NO_CONTENT)
def sign_in(login: Login, request: Request, session: SessionDep) -> Response:
    """Check the key (it needs the `sentiment` scope) and set the session cookie."""
    record = authenticate(session, login.key)
    if record is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid or revoked API key")
    if not record.grants(Scope.SENTIMENT):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this key lacks the 'sentiment' scope")
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.set_cookie(
        KEY_COOKIE,
        session_token(record, SESSION_TTL_S),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        max_age=SESSION_TTL_S,
        path="/",
    )
    return response


@router.post("/logout")
def sign_out() -> Response:
    response = RedirectResponse("/dashboard/login", status.HTTP_303_SEE_OTHER)
    response.delete_cookie(KEY_COOKIE, path="/")
    return response


@router.get("/static/plotly.min.js")
def plotly_js() -> FileResponse:
    return FileResponse(
        PLOTLY_JS, media_type="text/javascript", headers={"Cache-Control": "max-age=86400"}
    )


@router.get("/static/{name}")
def asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no asset {name!r}")
    return FileResponse(STATIC / name, media_type=ASSETS[name])
