"""Training the sentiment model: the arguments a run is recorded with."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from apps.sentiment.training import DEFAULT_ARGUMENTS
from core.storage.engine import get_session_factory, session_scope
from core.storage.models import TrainingRun
from tests.apps.sentiment.conftest import QUICK_TRAINING


def test_a_run_takes_the_sentiment_defaults_where_its_arguments_are_silent(
    sentiment_world: Path,
) -> None:
    factory = get_session_factory(f"sqlite:///{sentiment_world}")
    with session_scope(factory) as session:
        (params,) = session.scalars(select(TrainingRun.params)).all()

    # The world's run set these itself; the defaults fill in what it left out.
    assert params["validation_fraction"] == QUICK_TRAINING["validation_fraction"] == 0.25
    assert params["max_steps"] == 2
    assert params["learning_rate"] == DEFAULT_ARGUMENTS["learning_rate"] == 1e-4
    assert params["max_length"] == DEFAULT_ARGUMENTS["max_length"] == 64
