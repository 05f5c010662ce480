"""A support world built once per session: the demo catalogue and customers, and a trained
intent model (few-shot with very few steps: quick, and good enough to route clear messages)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from core.settings import Settings
from core.storage.engine import get_engine, get_session_factory, session_scope
from tests.conftest import make_settings

# Few-shot training cut short: the logistic head on (nearly) frozen MiniLM embeddings.
QUICK_TRAINING = {"strategy": "fewshot", "max_steps": 2, "seed": 7}


@pytest.fixture(scope="session")
def support_world(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Path:
    """A migrated SQLite file with the demo helpdesk loaded and a production intent model."""
    from apps.support.demo import load_demo
    from apps.support.settings import load_support_settings
    from apps.support.training import train_from_catalogue
    from core.ml.training import TrainingArguments

    root = tmp_path_factory.mktemp("support-world")
    database = root / "world.db"
    shutil.copy(sqlite_template, database)
    url = f"sqlite:///{database}"
    settings = make_settings(database_url=url, artifacts_dir=root / "artifacts")
    factory = get_session_factory(url)
    with session_scope(factory) as session:
        load_demo(session)
    outcome = train_from_catalogue(
        settings,
        load_support_settings(_env_file=None),
        factory,
        arguments=TrainingArguments.from_dict(QUICK_TRAINING),
    )
    assert outcome.promoted, outcome.promotion_note
    get_engine(url).dispose()
    return database


@pytest.fixture
def world_settings(support_world: Path, tmp_path: Path) -> Settings:
    """Settings on a private copy of the support world (the model files are shared, read-only)."""
    database = tmp_path / "world.db"
    shutil.copy(support_world, database)
    return make_settings(
        database_url=f"sqlite:///{database}", artifacts_dir=support_world.parent / "artifacts"
    )
