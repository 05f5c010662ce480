"""`textsuite support import|export|intents` against a migrated SQLite database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from apps.support import catalogue
from core.settings import Settings, get_settings
from core.storage.engine import get_session_factory
from textsuite.cli.evaluate import app as eval_app
from textsuite.cli.support import app

runner = CliRunner()
DEMO_CATALOGUE = (
    Path(__file__).resolve().parents[3] / "apps" / "support" / "demo" / "catalogue.yaml"
)

NLU = """\
version: "3.1"
nlu:
- intent: greet
  examples: |
    - hey
    - hello from [Berlin](city)
- intent: goodbye
  examples: |
    - bye
"""
DOMAIN = """\
version: "3.1"
responses:
  utter_greet:
  - text: "Hi {customer_name|there}!"
  utter_goodbye:
  - text: "Bye {Name}"
"""


@pytest.fixture
def database_env(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The CLI's settings pointed at a migrated SQLite database."""
    monkeypatch.setenv("TEXTSUITE_DATABASE_URL", sqlite_url)
    monkeypatch.delenv("TEXTSUITE_BROKER_URL", raising=False)
    get_settings.cache_clear()
    yield sqlite_url
    get_settings.cache_clear()


def intent_names(url: str) -> list[str]:
    with get_session_factory(url)() as session:
        return [summary.name for summary in catalogue.list_intents(session)]


def test_import_list_and_export(database_env: str, tmp_path: Path) -> None:
    imported = runner.invoke(app, ["import", str(DEMO_CATALOGUE)])
    assert imported.exit_code == 0, imported.output
    assert f"imported {DEMO_CATALOGUE} (yaml, merge):" in imported.output
    names = intent_names(database_env)
    assert len(names) >= 15 and "order_status" in names

    listed = runner.invoke(app, ["intents"])
    assert listed.exit_code == 0, listed.output
    assert "order_status" in listed.output and "talk_to_agent" in listed.output

    exported = tmp_path / "out.csv"
    written = runner.invoke(app, ["export", "--format", "csv", "--output", str(exported)])
    assert written.exit_code == 0, written.output
    assert exported.read_text(encoding="utf-8").startswith(
        "intent,text,answer,description,handoff,tags,owner"
    )
    to_stdout = runner.invoke(app, ["export"])
    assert to_stdout.exit_code == 0 and to_stdout.stdout.startswith("# textsuite support")

    replaced = runner.invoke(app, ["import", str(exported), "--mode", "replace"])
    assert replaced.exit_code == 0, replaced.output
    assert f"0 intents created, 0 updated, {len(names)} unchanged, 0 deleted" in replaced.output


def test_errors_are_listed_by_line_and_exit_1(database_env: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("intents:\n  - name: Refund\n    examples: []\n", encoding="utf-8")
    result = runner.invoke(app, ["import", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}: line 2: intent 'Refund': name must match" in result.output
    assert f"{bad}: line 3: intent 'Refund': no examples" in result.output
    assert "not imported, nothing was written: 2 problems" in result.output
    assert intent_names(database_env) == []


def test_rasa_with_a_domain_file(database_env: str, tmp_path: Path) -> None:
    nlu, domain = tmp_path / "nlu.yml", tmp_path / "domain.yml"
    nlu.write_text(NLU, encoding="utf-8")
    domain.write_text(DOMAIN, encoding="utf-8")
    refused = runner.invoke(app, ["import", str(nlu), "--domain", str(domain)])
    assert refused.exit_code == 1
    assert f"{domain}: line 6: intent 'goodbye': answer template: bad slot" in refused.output

    domain.write_text(DOMAIN.replace("{Name}", "{customer_name}"), encoding="utf-8")
    result = runner.invoke(app, ["import", str(nlu), "--domain", str(domain)])
    assert result.exit_code == 0, result.output
    assert "(rasa, merge): 2 intents created" in result.output
    with get_session_factory(database_env)() as session:
        assert catalogue.get_intent(session, "goodbye").answer == "Bye {customer_name}"


def test_usage_mistakes_fail_with_a_message(database_env: str, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n", encoding="utf-8")
    unknown = runner.invoke(app, ["import", str(notes)])
    assert unknown.exit_code == 1 and "pass --format yaml, csv or rasa" in unknown.output
    csv_file = tmp_path / "c.csv"
    csv_file.write_text("intent,text\na,b\n", encoding="utf-8")
    mixed = runner.invoke(
        app, ["import", str(csv_file), "--format", "csv", "--domain", str(csv_file)]
    )
    assert mixed.exit_code == 1 and "--domain only goes with --format rasa" in mixed.output
    missing = runner.invoke(app, ["import", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 1 and "cannot read" in missing.output
    empty = runner.invoke(app, ["intents"])
    assert empty.exit_code == 0 and "the catalogue is empty" in empty.output


def test_unmigrated_database_gives_advice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEXTSUITE_DATABASE_URL", f"sqlite:///{tmp_path / 'blank.db'}")
    get_settings.cache_clear()
    try:
        result = runner.invoke(app, ["intents"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1 and "run `textsuite migrate`" in result.output


def test_eval_support_scores_the_production_model_on_labelled_messages(
    world_settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TEXTSUITE_DATABASE_URL", world_settings.database_url)
    monkeypatch.setenv("TEXTSUITE_ARTIFACTS_DIR", str(world_settings.artifacts_dir))
    get_settings.cache_clear()
    labelled = tmp_path / "messages.jsonl"
    labelled.write_text(
        '{"text": "where is my order TH-104233?", "intent": "order_status"}\n'
        '{"text": "I want to speak to a real person", "intent": "talk_to_agent"}\n'
    )
    try:
        result = runner.invoke(eval_app, ["support", str(labelled)])
        labelled.write_text('{"text": "hello", "intent": "greetings_and_salutations"}\n')
        unknown = runner.invoke(eval_app, ["support", str(labelled)])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "2 texts, accuracy 1.0000" in result.output
    assert unknown.exit_code == 1 and "greetings_and_salutations" in unknown.output


def test_stats_summarise_the_bots_turns(
    world_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apps.support.models import Conversation, Message, MessageRole
    from core.ml.versions import production_version
    from core.storage.engine import session_scope

    monkeypatch.setenv("TEXTSUITE_DATABASE_URL", world_settings.database_url)
    get_settings.cache_clear()
    with session_scope(get_session_factory(world_settings.database_url)) as session:
        version = production_version(session, "support-intents").id
        conversation = Conversation(channel="api", external_id="c-1")
        session.add(conversation)
        session.flush()
        turns = [("order_status", None), ("order_status", None),
                 ("returns", "low_confidence"), (None, "already_handed_off")]  # fmt: skip
        for intent, reason in turns:
            session.add(Message(conversation_id=conversation.id, role=MessageRole.CUSTOMER,
                                text="...", intent=intent, handoff=reason is not None,
                                handoff_reason=reason, model_version_id=version))  # fmt: skip
    shown = runner.invoke(app, ["stats", "--days", "1"])
    get_settings.cache_clear()
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.output.split())  # the console wraps long lines
    assert "4 customer messages, 3 the bot's to answer (1 written while a person" in text
    assert "answered 2 (66.7%), handed off 1" in text
    assert "low_confidence" in text and "order_status" in text and "v1" in text
