"""The interactive docs work offline: /docs and /redoc load their scripts and styles from this
server only (and tell the browser to load nothing from elsewhere), and in a real browser cut off
from everything else they render our OpenAPI 3.1 schema."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from core.settings import Settings
from tests.apps.support.fake_chatwoot import ServerThread
from textsuite.service import create_service

CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


def linked_urls(html: str) -> list[str]:
    """Every URL the page loads or links to: `src` and `href` attributes."""
    return re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_load_only_from_this_server(client, page: str) -> None:
    response = client.get(page)  # no key: the docs are as open as /openapi.json
    assert response.status_code == 200
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert "http://" not in response.text and "https://" not in response.text
    urls = linked_urls(response.text)
    assert any(url.endswith(".js") for url in urls)
    for url in urls:
        assert url.startswith("/"), f"{page} links to {url!r}, not to this server"
        asset = client.get(url)
        assert asset.status_code == 200, url
        suffix = url[url.rindex(".") :]
        assert asset.headers["content-type"].startswith(CONTENT_TYPES[suffix]), url


def test_swagger_ui_is_version_5(client) -> None:
    """Swagger UI 4 cannot render OpenAPI 3.1, which is what FastAPI writes."""
    assert client.get("/openapi.json").json()["openapi"].startswith("3.1")
    script = client.get("/docs/static/swagger-ui-bundle.js").text
    versions = re.findall(r'PACKAGE_VERSION:"(\d+)\.', script)
    assert versions and int(versions[0]) >= 5, versions


def test_only_the_docs_assets_are_served(client) -> None:
    assert client.get("/docs/static/core.py").status_code == 404
    assert client.get("/docs/static/../__init__.py").status_code == 404


@pytest.fixture
def served(service_settings: Settings) -> Iterator[str]:
    """`textsuite serve` in a thread; yields its base URL."""
    server = ServerThread(create_service(service_settings), lifespan="on")
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.mark.browser
@pytest.mark.parametrize(
    ("page", "rendered"),
    [("/docs", ".opblock-summary-path"), ("/redoc", "[data-section-id^='operation/']")],
)
def test_the_docs_render_offline_in_a_browser(
    browser, served: str, page: str, rendered: str
) -> None:
    tab = browser.new_page()
    blocked: list[str] = []

    def local_only(route) -> None:
        if route.request.url.startswith(f"{served}/"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    tab.route("**/*", local_only)
    tab.goto(f"{served}{page}")
    tab.wait_for_selector(rendered, timeout=30_000)
    assert "/v1/support/messages" in tab.inner_text("body")
    assert blocked == []  # it did not even try to reach anything else


def test_every_route_behind_a_key_documents_what_a_key_can_be_refused_with(client) -> None:
    """An integrator reading the schema learns that a route can answer 401, 403 or 429."""
    schema = client.get("/openapi.json").json()
    secured = [
        (method, path, operation)
        for path, methods in schema["paths"].items()
        for method, operation in methods.items()
        if operation.get("security")
    ]
    assert len(secured) > 60
    undocumented = [
        f"{method.upper()} {path}"
        for method, path, operation in secured
        if not {"401", "403", "429"} <= set(operation["responses"])
    ]
    assert undocumented == []
