"""The README stays true: it opens with the two commands and documents every setting."""

from __future__ import annotations

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
