"""The `textsuite` command line: every command documents itself and the basics work."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from sqlalchemy import select
from typer.testing import CliRunner

import migrations
from core.ml import versions
from core.security import hash_api_key
from core.settings import get_settings
from core.storage.engine import get_session_factory
from core.storage.models import ApiKey, Job
from textsuite.cli import app
from textsuite.cli.run import node_name, worker_queues

runner = CliRunner()


def _commands(group: Any, path: list[str]) -> list[list[str]]:
    """Every command path of the CLI, found by walking its tree (new commands included)."""
    found = [path]
    if hasattr(group, "commands"):  # a group
        for name, command in sorted(group.commands.items()):
            found += _commands(command, [*path, name])
    return found


COMMANDS = _commands(typer.main.get_command(app), [])


def test_the_cli_tree_is_walked() -> None:
    assert ["sentiment", "watchlist", "import"] in COMMANDS and ["keys", "create"] in COMMANDS


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "textsuite")
def test_help(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


@pytest.fixture
def local_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("TEXTSUITE_DATABASE_URL", url)
    monkeypatch.delenv("TEXTSUITE_BROKER_URL", raising=False)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def test_migrate_keys_and_jobs(local_env: str) -> None:
    migrated = runner.invoke(app, ["migrate"])
    assert migrated.exit_code == 0, migrated.output
    assert f"database at revision {migrations.head_revision()}" in migrated.output

    created = runner.invoke(app, ["keys", "create", "--scope", "support", "--name", "helpdesk"])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[0]
    with get_session_factory(local_env)() as session:
        stored = session.scalars(select(ApiKey)).one()
    assert (stored.name, stored.scopes, stored.key_hash) == (
        "helpdesk",
        ["support"],
        hash_api_key(key),
    )

    listed = runner.invoke(app, ["keys", "list"])
    assert "helpdesk" in listed.output and key not in listed.output

    paced = runner.invoke(
        app, ["keys", "create", "--scope", "recommend", "--name", "shop", "--rate-limit", "20"]
    )
    assert paced.exit_code == 0, paced.output
    with get_session_factory(local_env)() as session:
        shop = session.scalars(select(ApiKey).where(ApiKey.name == "shop")).one()
    assert shop.rate_limit_per_s == 20

    submitted = runner.invoke(app, ["jobs", "submit", "core.worker_info", "--param", "echo=42"])
    assert submitted.exit_code == 0, submitted.output
    assert '"status": "succeeded"' in submitted.output and '"echo": 42' in submitted.output
    with get_session_factory(local_env)() as session:
        job_id = str(session.scalars(select(Job)).one().id)
    listed_jobs = runner.invoke(app, ["jobs", "list"])  # 80 columns: the id stays whole
    assert job_id in listed_jobs.output, listed_jobs.output
    shown = runner.invoke(app, ["jobs", "show", job_id])
    assert shown.exit_code == 0 and "succeeded" in shown.output, shown.output
    too_late = runner.invoke(app, ["jobs", "cancel", job_id])
    assert too_late.exit_code == 1 and "already finished: succeeded" in too_late.output

    with get_session_factory(local_env)() as session:  # waiting for a worker
        waiting = Job(kind="core.worker_info", queue="default", status="queued", params={})
        session.add(waiting)
        session.commit()
        queued_id = str(waiting.id)
    cancelled = runner.invoke(app, ["jobs", "cancel", queued_id])
    assert cancelled.exit_code == 0 and f"job {queued_id} cancelled" in cancelled.output
    assert '"status": "cancelled"' in runner.invoke(app, ["jobs", "show", queued_id]).output

    revoked = runner.invoke(app, ["keys", "revoke", str(stored.id)])
    assert revoked.exit_code == 0 and revoked.output.strip() == f"revoked {stored.id}"
    again = runner.invoke(app, ["keys", "revoke", str(stored.id)])
    assert again.exit_code == 0 and "was already revoked" in again.output


def test_bad_scope_and_unknown_kind_fail_with_a_message(local_env: str) -> None:
    runner.invoke(app, ["migrate"])
    bad = runner.invoke(app, ["keys", "create", "--scope", "billing"])
    assert bad.exit_code == 1 and "unknown scope 'billing'" in bad.output
    unknown = runner.invoke(app, ["jobs", "submit", "core.nope"])
    assert unknown.exit_code == 1 and "known kinds" in unknown.output


def test_worker_needs_a_broker(local_env: str) -> None:
    result = runner.invoke(app, ["worker"])
    assert result.exit_code == 1
    assert "no broker configured: set TEXTSUITE_BROKER_URL" in result.output


def test_model_workers_refuse_the_forking_pool(local_env: str, monkeypatch) -> None:
    monkeypatch.setenv("TEXTSUITE_BROKER_URL", "redis://127.0.0.1:6379/15")
    get_settings.cache_clear()
    result = runner.invoke(app, ["worker", "--queues", "gpu", "--pool", "prefork"])
    assert (
        result.exit_code == 1
        and "the gpu and inference queue(s) need the solo or threads" in result.output
    )
    result = runner.invoke(app, ["worker", "--queues", "default,inference", "--pool", "prefork"])
    assert result.exit_code == 1 and "the inference queue(s) need" in result.output
    assert worker_queues("gpu") == ["gpu", "inference"]  # never left unconsumed
    # Workers on one host are told apart by name (Celery's default is celery@host for all).
    assert node_name("gpu", None) == "gpu@%h"
    assert node_name(" default ,gpu", None) == "default-gpu@%h"
    assert node_name("gpu", "gpu1") == "gpu1@%h"
    assert node_name("gpu", "gpu1@box7") == "gpu1@box7"
    assert worker_queues(" default ,inference") == ["default", "inference"]
    result = runner.invoke(app, ["worker", "--queues", "default,cpu"])
    assert result.exit_code == 1
    assert "unknown queue(s) ['cpu']; expected some of default, gpu, inference" in result.output


def test_beat_needs_a_broker_and_the_beat_scheduler(local_env: str, monkeypatch) -> None:
    result = runner.invoke(app, ["beat"])
    assert result.exit_code == 1 and "no broker configured" in result.output
    monkeypatch.setenv("TEXTSUITE_BROKER_URL", "redis://127.0.0.1:6379/15")
    get_settings.cache_clear()
    result = runner.invoke(app, ["beat"])
    assert result.exit_code == 1
    assert "TEXTSUITE_SCHEDULER is 'api': the API processes run the periodic work" in result.output


def test_bench_runs_the_checkouts_benchmarks_by_name() -> None:
    unknown = runner.invoke(app, ["bench", "nope"])
    assert unknown.exit_code == 1 and "finetune" in unknown.output and "sentiment" in unknown.output
    argv = list(sys.argv)
    usage = runner.invoke(app, ["bench", "sentiment", "--", "--help"])
    assert usage.exit_code == 0 and "--parts" in usage.output
    assert sys.argv == argv  # the command line of this process is left as it was


def test_migrate_says_what_went_wrong(local_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    bogus = runner.invoke(app, ["migrate", "--revision", "bogus"])
    assert bogus.exit_code == 1 and "cannot migrate to 'bogus'" in bogus.output, bogus.output
    monkeypatch.setenv("TEXTSUITE_DATABASE_URL", "postgresql+psycopg://app:s3cret@127.0.0.1:1/x")
    get_settings.cache_clear()
    down = runner.invoke(app, ["migrate"])
    assert down.exit_code == 1 and "is unreachable" in down.output, down.output
    assert "s3cret" not in down.output  # the password is not printed
    get_settings.cache_clear()


def test_unmigrated_database_gives_advice(local_env: str) -> None:
    result = runner.invoke(app, ["jobs", "list"])
    assert result.exit_code == 1
    assert "run `textsuite migrate`" in result.output


@pytest.mark.parametrize(
    ("variable", "value", "command"),
    [
        ("TEXTSUITE_PORT", "http", ["migrate"]),
        # An app's setting, for a command that never reads it: refused all the same.
        ("TEXTSUITE_SUPPORT_RETENTION_DAYS", "abc", ["jobs", "list"]),
    ],
)
def test_bad_setting_exits_2_naming_the_variable(
    variable: str, value: str, command: list[str]
) -> None:
    import subprocess
    import sys

    env = {variable: value, "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "textsuite", *command],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert variable in result.stderr and "Traceback" not in result.stderr


def test_train_then_manage_versions(local_env: str, tmp_path: Path, monkeypatch) -> None:
    from tests.core.ml.conftest import make_tiny_bert
    from tests.workers.test_training_job import _write_csv

    monkeypatch.setenv("TEXTSUITE_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    get_settings.cache_clear()
    runner.invoke(app, ["migrate"])
    base = make_tiny_bert(tmp_path / "base")
    data = _write_csv(tmp_path / "data.csv")
    train = [
        "train",
        "classifier",
        "--data",
        str(data),
        "--name",
        "tickets",
        "--base",
        str(base),
        "--text-field",
        "utterance",
        "--label-field",
        "intent",
        "--strategy",
        "full",
        "--epochs",
        "1",
        "--arguments",
        '{"max_length": 24}',
    ]
    first = runner.invoke(app, train)
    assert first.exit_code == 0, first.output
    assert '"promoted": true' in first.output and '"macro_f1"' in first.output
    assert "confusion_matrix" not in first.output  # after the run: the headline figures
    assert "textsuite models show tickets --version 1" in first.output
    second = runner.invoke(app, [*train, "--promotion", "never"])
    assert second.exit_code == 0, second.output

    listed = runner.invoke(app, ["models", "list", "tickets"])
    assert "production" in listed.output and "candidate" in listed.output
    shown = runner.invoke(app, ["models", "show", "tickets", "--version", "2"])
    assert '"stage": "candidate"' in shown.output and '"macro_f1"' in shown.output
    forced = runner.invoke(app, ["models", "promote", "tickets", "--version", "2", "--force"])
    assert forced.exit_code == 0 and "tickets v2 is in production" in forced.output
    back = runner.invoke(app, ["models", "rollback", "tickets"])
    assert back.exit_code == 0 and "tickets v1 is in production again" in back.output
    missing = runner.invoke(app, ["models", "promote", "tickets", "--version", "9"])
    assert missing.exit_code == 1 and "has no v9" in missing.output

    with get_session_factory(local_env)() as session:
        second_files = Path(versions.get_version(session, "tickets", 2).artifact_path)
    (second_files / "model.safetensors").write_bytes(b"not weights")
    damaged = runner.invoke(app, ["models", "promote", "tickets", "--version", "2", "--force"])
    assert damaged.exit_code == 1 and "tickets v2 was not put in production" in damaged.output
    with get_session_factory(local_env)() as session:
        assert versions.production_version(session, "tickets").version == 1


def test_redispatch_needs_a_broker_and_sends_only_stalled_jobs(
    local_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner.invoke(app, ["migrate"])
    alone = runner.invoke(app, ["jobs", "redispatch"])
    assert alone.exit_code == 1 and "jobs run inside `textsuite serve`" in alone.output
    monkeypatch.setenv("TEXTSUITE_BROKER_URL", "redis://127.0.0.1:6379/15")
    get_settings.cache_clear()
    nothing = runner.invoke(app, ["jobs", "redispatch", "--older-than", "0"])
    assert nothing.exit_code == 0 and "0 jobs sent again" in nothing.output
