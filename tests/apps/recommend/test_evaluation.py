"""Leave-last-out evaluation and the recommender's CLI on a MovieLens-format folder written
here: two taste groups whose members rate the group's films in a shared order."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from apps.recommend.evaluation import evaluate, load_movielens, movie_text
from apps.recommend.models import Interaction, Item, ItemEmbedding
from apps.recommend.settings import get_recommend_settings
from core.settings import Settings, get_settings
from core.storage.engine import get_session_factory
from textsuite.cli import app

runner = CliRunner()
GENRES = ["unknown", "Action", "Comedy", "Horror"]
MOVIES = [
    ("Space Battle (1994)", "Action"),
    ("Laser Duel (1995)", "Action"),
    ("Robot War (1996)", "Action"),
    ("Star Fleet (1997)", "Action"),
    ("Funny Farm (1994)", "Comedy"),
    ("Silly Summer (1995)", "Comedy"),
    ("Wedding Laughs (1996)", "Comedy"),
    ("Office Jokes (1997)", "Comedy"),
    ("Night Terror (1996)", "Horror"),
]


def write_movielens(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "u.genre").write_text("".join(f"{g}|{i}\n" for i, g in enumerate(GENRES)))
    lines = []
    for i, (title, genre) in enumerate(MOVIES, start=1):
        flags = "|".join("1" if g == genre else "0" for g in GENRES)
        lines.append(f"{i}|{title}|01-Jan-1995||http://example/{i}|{flags}")
    (folder / "u.item").write_text("\n".join(lines) + "\n", encoding="latin-1")
    ratings = []
    for user in range(1, 21):
        films = [1, 2, 3, 4] if user % 2 else [5, 6, 7, 8]
        rotated = films[user % 3 :] + films[: user % 3]  # varied order, same taste
        for t, movie in enumerate([9, *rotated]):
            ratings.append(f"{user}\t{movie}\t{5 if movie != 9 else 2}\t{1000 * user + t}")
    (folder / "u.data").write_text("\n".join(ratings) + "\n")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    write_movielens(tmp_path / "data" / "movielens-100k")
    return tmp_path / "data"


def test_movielens_is_read_in_time_order(data_dir: Path) -> None:
    data = load_movielens(data_dir)
    assert data.texts[0] == movie_text("Space Battle (1994)", ["Action"])
    assert data.texts[0] == "Space Battle (1994). Genres: Action."
    assert len(data.histories) == 20
    first = data.histories[1]  # user 1 rated 9, then 2, 3, 4, 1 (rotated by one)
    assert first.positions.tolist() == [8, 1, 2, 3] and data.targets[1] == 0
    assert first.values == [2.0, 5.0, 5.0, 5.0]
    with pytest.raises(FileNotFoundError, match="TEXTSUITE_DATA_DIR"):
        load_movielens(data_dir / "missing")


def test_models_that_use_taste_beat_popularity(data_dir: Path) -> None:
    data = load_movielens(data_dir)
    genre_of = {i: genre for i, (_, genre) in enumerate(MOVIES)}
    one_hot = np.array([[genre_of[i] == g for g in GENRES] for i in range(len(MOVIES))], float)
    results = {r.model: r for r in evaluate(data, one_hot, k=3)}
    # Every user's held-out film is one of their group's: taste finds it, popularity (all
    # films of both groups equally rated) cannot tell the groups apart.
    assert results["item-knn"].hit_rate == 1.0 and results["blended"].hit_rate == 1.0
    assert results["text"].hit_rate == 1.0
    assert results["popularity"].hit_rate < 1.0
    assert results["blended"].ndcg >= results["popularity"].ndcg
    cold = {r.model: r for r in evaluate(data, one_hot, k=3, keep_last=1, models=("text",))}
    assert cold["text"].users == 20
    with pytest.raises(ValueError, match="unknown models"):
        evaluate(data, one_hot, models=("magic",))


@pytest.fixture
def cli_env(service_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    monkeypatch.setenv("TEXTSUITE_DATABASE_URL", service_settings.database_url)
    monkeypatch.setenv("TEXTSUITE_ARTIFACTS_DIR", str(service_settings.artifacts_dir))
    get_settings.cache_clear()
    get_recommend_settings.cache_clear()
    yield service_settings
    get_settings.cache_clear()
    get_recommend_settings.cache_clear()


def count(settings: Settings, model: type) -> int:
    with get_session_factory(settings.database_url)() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_cli_eval_and_bulk_imports(cli_env: Settings, data_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["eval", "recommend", "--data-dir", str(data_dir), "--k", "3"])
    assert result.exit_code == 0, result.output
    assert "blended" in result.output and "Cold users" in result.output

    items = tmp_path / "items.csv"
    items.write_text("external_id,title,category\nA1,Trail shoe,footwear\nA2,Tent,tents\n")
    result = runner.invoke(app, ["recommend", "import-items", str(items)])
    assert result.exit_code == 0, result.output
    assert "2 created" in result.output and "embedded 2 items" in result.output
    assert count(cli_env, Item) == 2 and count(cli_env, ItemEmbedding) == 2

    events = tmp_path / "events.jsonl"
    events.write_text(
        '{"event_id": "e1", "user_id": "u1", "item_id": "A1", "type": "view"}\n'
        '{"event_id": "e2", "user_id": "u1", "item_id": "ZZ", "type": "view"}\n'
    )
    result = runner.invoke(app, ["recommend", "import-events", str(events)])
    assert result.exit_code == 1 and "line 2: unknown item 'ZZ'" in result.output
    assert count(cli_env, Interaction) == 0
    events.write_text('{"event_id": "e1", "user_id": "u1", "item_id": "A1", "type": "view"}\n')
    assert "1 stored" in runner.invoke(app, ["ingest", "events", str(events)]).output  # the same
    assert (
        "1 already there" in runner.invoke(app, ["recommend", "import-events", str(events)]).output
    )
