"""The README stays true: it opens with the two commands, documents every setting, and its
HTTP API table lists the routes the service has."""

from __future__ import annotations

import re

from core.settings import ENV_PREFIX, Settings
from tests.conftest import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()


def test_opens_with_the_two_commands() -> None:
    first_block = README.split("```")[1]
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()[1:] if line]
    assert commands == ["make demo", "make test"]


def test_documents_every_setting() -> None:
    from apps.recommend.settings import RecommendSettings
    from apps.sentiment.settings import SentimentSettings
    from apps.support.settings import SupportSettings

    variables = (
        [f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields]
        + [f"TEXTSUITE_SUPPORT_{name.upper()}" for name in SupportSettings.model_fields]
        + [f"TEXTSUITE_SENTIMENT_{name.upper()}" for name in SentimentSettings.model_fields]
        + [f"TEXTSUITE_RECOMMEND_{name.upper()}" for name in RecommendSettings.model_fields]
    )
    assert [variable for variable in variables if variable not in README] == []


def _documented_routes() -> set[tuple[str, str]]:
    """(method, path) of every route the README's HTTP API table names. A cell lists routes
    as `GET/POST /v1/a/{id}`; `.../b` continues the cell's last full path (from its segment
    `b` where the path has one, else appended), and a bare `DELETE` reuses the last path."""
    section = README.split("## HTTP API", 1)[1].split("\n## ", 1)[0]
    routes: set[tuple[str, str]] = set()
    for row in section.splitlines():
        if not row.startswith("| `"):
            continue
        base = last = ""
        for span in re.findall(r"`([^`]+)`", row.split("|")[1]):
            methods, _, path = span.partition(" ")
            path = path.split("?")[0]
            if path.startswith("/"):
                base = last = path
            elif path.startswith(".../"):
                tail = path.removeprefix(".../").split("/")
                parts = base.split("/")
                cut = parts.index(tail[0]) if tail[0] in parts else len(parts)
                last = "/".join(parts[:cut] + tail)
            routes.update((method, last) for method in methods.split("/"))
    return routes


def _template(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)  # the README may name a parameter differently


def test_the_route_table_lists_every_route_and_only_real_ones(service_settings: Settings) -> None:
    from textsuite.service import create_service

    app = create_service(service_settings)  # built, not started: its schema is all there is
    served = {
        (method.upper(), _template(path))
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    }
    documented = {
        (method, _template(path))
        for method, path in _documented_routes()
        if not path.startswith("/dashboard")  # pages, outside the schema (browser-tested)
    }
    assert len(documented) > 50, "the README's table was not read"
    assert sorted(documented - served) == [], "documented but not served"
    assert sorted(served - documented) == [], "served but not in the README's table"
