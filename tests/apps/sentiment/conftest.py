"""A sentiment world built once per session: a small watchlist and a sentiment model trained
briefly on headlines written here (the sentence-head strategy cut to a few steps: the head is
a logistic regression on MiniLM embeddings, good enough to tell clear news apart)."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import event

from core.settings import Settings
from core.storage.engine import get_engine, get_session_factory, session_scope
from tests.conftest import make_settings

QUICK_TRAINING = {"strategy": "sentence", "max_steps": 2, "seed": 7, "validation_fraction": 0.25}

HEADLINES = {
    "negative": [
        "Shares plunge after the company cuts its full-year outlook",
        "Regulator rejects the drugmaker's application, stock tumbles",
        "Quarterly loss widens as sales collapse",
        "Analysts downgrade the bank to sell on mounting bad loans",
        "Company recalls two million vehicles over brake defect",
        "Retailer files for bankruptcy protection",
        "Profit warning sends the stock to a five-year low",
        "Chipmaker slashes jobs as demand slumps",
        "Investors sue over accounting irregularities",
        "Credit rating cut to junk, bonds sell off",
        "Airline suspends dividend after heavy losses",
        "CEO resigns amid fraud probe, shares sink",
    ],
    "positive": [
        "Shares jump after record quarterly profit beats estimates",
        "Company raises full-year guidance on strong demand",
        "Analysts upgrade the stock to buy, citing margin gains",
        "Drugmaker wins approval for its lead therapy, stock soars",
        "Board approves a larger buyback and a dividend increase",
        "Revenue surges 40% as cloud business booms",
        "Automaker posts best monthly sales on record",
        "Lands a multibillion-dollar defense contract",
        "Earnings top forecasts, stock rallies to an all-time high",
        "Bank reports higher profit and lower bad loans",
        "Retailer's holiday sales beat expectations",
        "Chipmaker's orders rebound sharply, shares climb",
    ],
    "neutral": [
        "Company to report third-quarter results on Thursday",
        "Annual shareholder meeting scheduled for May 14",
        "Company names a new chief financial officer",
        "Stock to join the index at the next rebalance",
        "Firm to present at an industry conference next week",
        "Company files its annual report with the regulator",
        "Board meets to review the strategic plan",
        "Bank to hold an investor day in London",
        "Automaker will publish monthly deliveries on Friday",
        "Company completes a previously announced reorganisation of units",
        "Retailer confirms the date of its trading update",
        "Chipmaker lists new notes on the exchange",
    ],
}

# Six clearly negative headlines about one company: enough to trip a negative-share rule.
BURST = [
    "Halvorsen Pharma shares plunge after regulator rejects its lead drug",
    "Halvorsen Pharma cuts its outlook, stock tumbles to a five-year low",
    "Analysts downgrade Halvorsen Pharma to sell after the rejection",
    "Halvorsen Pharma faces a class action over the failed application",
    "Halvorsen Pharma suspends its dividend as losses mount",
    "Credit rating of Halvorsen Pharma cut to junk",
]

WATCHLIST = [
    {"ticker": "NWRB", "name": "Northwind Robotics", "aliases": ["Northwind"], "sector": "Tech"},
    {"ticker": "HLVP", "name": "Halvorsen Pharma", "aliases": ["Halvorsen"], "sector": "Health"},
    {"ticker": "CRBK", "name": "Corvid Bank", "aliases": ["corvid bancorp"], "sector": "Banks"},
]


def write_headlines(path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for label, texts in HEADLINES.items():
            writer.writerows((text, label) for text in texts)
    return path


@pytest.fixture(scope="session")
def sentiment_world(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Path:
    """A migrated SQLite file with the watchlist and a production sentiment model."""
    from apps.sentiment.entities import EntityIn, upsert_entities
    from apps.sentiment.settings import load_sentiment_settings
    from apps.sentiment.training import SentimentTrainParams, train_sentiment

    root = tmp_path_factory.mktemp("sentiment-world")
    database = root / "world.db"
    shutil.copy(sqlite_template, database)
    url = f"sqlite:///{database}"
    # Trained in fp32 on every host (bf16 autocast where the CPU has it would move this
    # two-step model's marginal answers, which the demo false-alarm check counts); the tests
    # serve it in whatever `auto` picks.
    settings = make_settings(database_url=url, artifacts_dir=root / "artifacts", dtype="float32")
    factory = get_session_factory(url)
    with session_scope(factory) as session:
        upsert_entities(session, [EntityIn.model_validate(e) for e in WATCHLIST])
    params = SentimentTrainParams(
        arguments=QUICK_TRAINING,
        include_twitter=False,
        include_demo=False,
        extra_path=str(write_headlines(root / "headlines.csv")),
    )
    outcome = train_sentiment(settings, load_sentiment_settings(_env_file=None), factory, params)
    assert outcome.promoted, outcome.promotion_note
    get_engine(url).dispose()
    return database


@pytest.fixture
def sentiment_settings(sentiment_world: Path, tmp_path: Path) -> Settings:
    """Settings on a private copy of the world (the model files are shared, read-only)."""
    database = tmp_path / "world.db"
    shutil.copy(sentiment_world, database)
    return make_settings(
        database_url=f"sqlite:///{database}",
        artifacts_dir=sentiment_world.parent / "artifacts",
        var_dir=tmp_path / "var",
    )


@contextmanager
def statements_run(url: str) -> Iterator[list[str]]:
    """The SQL statements that the engine of `url` sends inside the block, in order."""
    engine = get_engine(url)
    sent: list[str] = []

    def record(connection, cursor, statement, parameters, context, executemany) -> None:
        sent.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", record)
