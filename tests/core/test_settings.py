from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.settings import Settings, SettingsError, load_settings


def test_defaults_need_nothing_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TEXTSUITE_DATABASE_URL", "TEXTSUITE_BROKER_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(_env_file=None)
    assert settings.database_url.startswith("sqlite:///var/")
    assert settings.broker_url is None
    assert settings.jobs_inprocess


def test_reads_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEXTSUITE_DATABASE_URL", "postgresql+psycopg://u@db:5432/prod")
    monkeypatch.setenv("TEXTSUITE_BROKER_URL", "redis://cache:6379/0")
    monkeypatch.setenv("TEXTSUITE_WORKER_IMPORTS", '["my_tasks"]')
    settings = load_settings(_env_file=None)
    assert settings.database_url == "postgresql+psycopg://u@db:5432/prod"
    assert settings.broker_url == "redis://cache:6379/0"
    assert settings.worker_imports == ["my_tasks"]
    assert not settings.jobs_inprocess


def test_reads_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEXTSUITE_PORT", raising=False)
    env_file = tmp_path / ".env"
    env_file.write_text("TEXTSUITE_PORT=9001\n")
    assert Settings(_env_file=env_file).port == 9001


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("TEXTSUITE_PORT", "eighty", "valid integer"),
        ("TEXTSUITE_PORT", "70000", "less than or equal to 65535"),
        ("TEXTSUITE_DATABASE_URL", "mysql://root@db/x", "unsupported database 'mysql'"),
        ("TEXTSUITE_DATABASE_URL", "not a url", "not a SQLAlchemy URL"),
        ("TEXTSUITE_BROKER_URL", "amqp://guest@rabbit//", "redis://"),
        ("TEXTSUITE_LOG_LEVEL", "LOUD", "unknown log level"),
        ("TEXTSUITE_LOG_FORMAT", "xml", "json"),
        ("TEXTSUITE_DEVICE", "tpu", "unknown device 'tpu'"),
        ("TEXTSUITE_DTYPE", "int4", "unknown dtype 'int4'"),
        ("TEXTSUITE_TRAINING_PRECISION", "int8", "unknown training precision 'int8'"),
        ("TEXTSUITE_BOOTSTRAP_API_KEY", "short-key", "at least 24 characters, got 9"),
        ("TEXTSUITE_WORKER_IMPORTS", "tasks.mine", "not valid JSON (a list is written"),
        ("TEXTSUITE_RATE_LIMIT_PER_S", "inf", "finite number"),  # no limit is 0
    ],
)
def test_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, says: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None)
    assert variable in str(caught.value)
    assert says in str(caught.value)


def test_visibility_timeout_must_exceed_the_longest_job() -> None:
    with pytest.raises(SettingsError, match="TEXTSUITE_BROKER_VISIBILITY_TIMEOUT_S must be above"):
        load_settings(_env_file=None, job_time_limit_s=3600, broker_visibility_timeout_s=1800)


def test_empty_broker_url_means_in_process() -> None:
    assert load_settings(_env_file=None, broker_url="").jobs_inprocess


def test_folders_are_made_absolute_so_stored_paths_mean_one_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(_env_file=None, artifacts_dir="shared/artifacts", var_dir="var")
    assert settings.artifacts_dir == Path(os.getcwd()) / "shared" / "artifacts"
    assert settings.var_dir.is_absolute() and settings.data_dir.is_absolute()
    # A link is kept, not followed: it is the path every machine mounts the volume at.
    (tmp_path / "host-a-disk").mkdir()
    (tmp_path / "mnt").symlink_to(tmp_path / "host-a-disk")
    linked = load_settings(_env_file=None, artifacts_dir=str(tmp_path / "mnt" / "artifacts"))
    assert linked.artifacts_dir == tmp_path / "mnt" / "artifacts"


def test_an_empty_bootstrap_key_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEXTSUITE_BOOTSTRAP_API_KEY", "")  # how a variable is often "unset"
    assert load_settings(_env_file=None).bootstrap_api_key is None


def test_an_app_list_setting_that_is_not_json_names_its_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from apps.support.settings import load_support_settings

    monkeypatch.setenv("TEXTSUITE_SUPPORT_REPEAT_EXEMPT_TAGS", "smalltalk")
    with pytest.raises(SettingsError, match="TEXTSUITE_SUPPORT_REPEAT_EXEMPT_TAGS: not valid"):
        load_support_settings(_env_file=None)
