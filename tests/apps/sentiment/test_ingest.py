"""The ingestor: one transaction per batch (stored, linked and scored together, or nothing)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from apps.sentiment import articles as articles_module
from apps.sentiment.alerts import ensure_default_rules
from apps.sentiment.articles import ArticleIn
from apps.sentiment.entities import EntityIn, upsert_entities
from apps.sentiment.ingest import Ingestor
from apps.sentiment.models import Article
from apps.sentiment.scoring import (
    NoSentimentModel,
    SentimentScorer,
    scores_from_probabilities,
)
from core.ml.serving import ProductionClassifier
from core.settings import Settings
from core.storage.engine import get_session_factory, session_scope
from tests.apps.sentiment.conftest import statements_run


def ingestor_for(settings: Settings, name: str = "sentiment") -> Ingestor:
    factory = get_session_factory(settings.database_url)
    return Ingestor(factory, SentimentScorer(ProductionClassifier(settings, factory, name)))


def articles(settings: Settings) -> list[Article]:
    with get_session_factory(settings.database_url)() as session:
        return list(session.scalars(select(Article)))


def test_a_batch_is_stored_and_scored_together(sentiment_settings: Settings) -> None:
    ingestor = ingestor_for(sentiment_settings)
    results = ingestor.ingest(
        [
            ArticleIn(title="Northwind Robotics shares plunge after a profit warning"),
            ArticleIn(title="$HLVP soars after its drug wins approval"),
        ]
    )
    assert [r.label for r in results] == ["negative", "positive"]
    stored = articles(sentiment_settings)
    assert len(stored) == 2 and all(a.scored_at and a.model_version_id for a in stored)


def test_a_failure_while_scoring_stores_nothing(
    sentiment_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingestor = ingestor_for(sentiment_settings)

    def broken(session, ids):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(ingestor.scorer, "score_unscored", broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        ingestor.ingest([ArticleIn(title="Corvid Bank beats estimates")])
    assert articles(sentiment_settings) == []


def test_an_article_stored_meanwhile_by_another_process_is_found_on_retry(
    sentiment_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingestor = ingestor_for(sentiment_settings)
    [first] = ingestor.ingest([ArticleIn(url="https://n.example/x", title="Fed holds rates")])
    calls = {"n": 0}
    real = articles_module._existing

    def blind_once(session, keys):  # as if the other insert landed right after we looked
        calls["n"] += 1
        return {} if calls["n"] == 1 else real(session, keys)

    monkeypatch.setattr(articles_module, "_existing", blind_once)
    again, other = ingestor.ingest(
        [
            ArticleIn(url="https://n.example/x", title="Fed holds rates steady"),
            ArticleIn(title="Oil climbs"),
        ]
    )
    assert again.article_id == first.article_id and again.duplicate
    assert not other.duplicate and other.label is not None
    assert len(articles(sentiment_settings)) == 2


def test_a_batch_about_ten_companies_sends_the_statements_of_a_batch_about_one(
    sentiment_settings: Settings,
) -> None:
    """Storing, scoring and evaluating alerts cost a fixed number of statements per batch,
    however many companies its articles mention."""
    url = sentiment_settings.database_url
    tickers = [f"CO{letter}" for letter in "ABCDEFGHIJ"]
    with session_scope(get_session_factory(url)) as session:
        upsert_entities(session, [EntityIn(ticker=t, name=f"Company {t}") for t in tickers])
        ensure_default_rules(session)
    ingestor = ingestor_for(sentiment_settings)
    # The model and watchlist load, and the windows' histories of all ten are kept from now on.
    ingestor.ingest([ArticleIn(title=f"${t} opens a plant") for t in tickers])

    def statements(items: list[ArticleIn]) -> list[str]:
        with statements_run(url) as sent:
            ingestor.ingest(items)
        return [s for s in sent if "sentiment_" in s]  # not the model version lookups

    about_one = statements([ArticleIn(title=f"$COA item {i} on its results") for i in range(10)])
    about_ten = statements([ArticleIn(title=f"${t} item on its results") for t in tickers])
    assert len(about_ten) == len(about_one) <= 12


def test_without_a_production_model_nothing_is_stored(sentiment_settings: Settings) -> None:
    with pytest.raises(NoSentimentModel, match="textsuite train sentiment"):
        ingestor_for(sentiment_settings, name="no-such-model").ingest([ArticleIn(title="x")])
    with get_session_factory(sentiment_settings.database_url)() as session:
        assert session.scalar(select(func.count(Article.id))) == 0


def test_the_score_is_positive_minus_negative() -> None:
    [score] = scores_from_probabilities([[0.1, 0.2, 0.7]], ["negative", "neutral", "positive"])
    assert score.label == "positive" and score.score == pytest.approx(0.6)
    [score] = scores_from_probabilities([[0.5, 0.3, 0.2]], ["neutral", "positive", "negative"])
    assert score.label == "neutral" and score.score == pytest.approx(0.1)
    with pytest.raises(ValueError, match="missing"):
        scores_from_probabilities([[0.5, 0.5]], ["bearish", "bullish"])


def test_int8_serving_exports_once_checked_and_agrees_with_torch(
    sentiment_settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import json
    import shutil

    from core.ml.serving import INT8_CHECK_FILE, load_for_serving
    from core.ml.training.data import HELD_OUT_FILE
    from core.ml.versions import production_version
    from tests.apps.sentiment.conftest import BURST, HEADLINES

    factory = get_session_factory(sentiment_settings.database_url)
    with factory() as session:
        artifact = Path(production_version(session, "sentiment").artifact_path)
    texts = [*BURST, *HEADLINES["positive"], *HEADLINES["neutral"]]
    torch_model = load_for_serving(artifact, sentiment_settings)
    int8_settings = sentiment_settings.model_copy(update={"serve_int8": True})
    int8_model = load_for_serving(artifact, int8_settings)
    assert (artifact / "onnx-int8").is_dir() and type(int8_model).__name__ == "OnnxClassifier"
    torch_labels = torch_model.predict_proba(texts).argmax(axis=1)
    assert (int8_model.predict_proba(texts).argmax(axis=1) == torch_labels).mean() >= 0.95
    exported_at = (artifact / "onnx-int8").stat().st_mtime
    load_for_serving(artifact, int8_settings)  # the export is reused, not redone
    assert (artifact / "onnx-int8").stat().st_mtime == exported_at
    # It was checked against torch on the version's held-out examples before serving.
    verdict = json.loads((artifact / "onnx-int8" / INT8_CHECK_FILE).read_text())
    held_out = (artifact / HELD_OUT_FILE).read_text().splitlines()
    assert verdict["acceptable"] and f"on {len(held_out)} texts" in verdict["summary"]
    assert "accuracy" in verdict["summary"]
    # An export that lost accuracy is not served, nor a version nothing can check it on.
    refused = shutil.copytree(artifact, tmp_path / "refused")
    (refused / "onnx-int8" / INT8_CHECK_FILE).write_text(
        json.dumps({"acceptable": False, "summary": "accuracy 0.9 -> 0.8 (-10.00 points)"})
    )
    unchecked = shutil.copytree(artifact, tmp_path / "unchecked")
    shutil.rmtree(unchecked / "onnx-int8")
    (unchecked / HELD_OUT_FILE).unlink()
    earlier = shutil.copytree(artifact, tmp_path / "earlier")  # exported before the check
    (earlier / "onnx-int8" / INT8_CHECK_FILE).unlink()
    assert type(load_for_serving(earlier, int8_settings)).__name__ == "OnnxClassifier"
    assert json.loads((earlier / "onnx-int8" / INT8_CHECK_FILE).read_text()) == verdict
    with caplog.at_level("WARNING", logger="core.ml.serving"):
        for folder in (refused, unchecked):
            assert type(load_for_serving(folder, int8_settings)).__name__ != "OnnxClassifier"
    assert "-10.00 points" in caplog.text and "no held-out examples" in caplog.text
    assert not (unchecked / "onnx-int8").exists()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_served_model_packs_and_bf16_agrees_with_fp32(
    sentiment_settings: Settings, dtype: str
) -> None:
    """The fine-tuned model serves packed in either precision, with the same answers."""
    from core.ml.serving import load_for_serving
    from core.ml.versions import production_version
    from tests.apps.sentiment.conftest import BURST, HEADLINES

    factory = get_session_factory(sentiment_settings.database_url)
    with factory() as session:
        artifact = Path(production_version(session, "sentiment").artifact_path)
    texts = [*BURST, *HEADLINES["positive"], *HEADLINES["neutral"]]
    reference = load_for_serving(
        artifact, sentiment_settings.model_copy(update={"dtype": "float32"})
    ).predict_proba(texts)
    served = load_for_serving(artifact, sentiment_settings.model_copy(update={"dtype": dtype}))
    assert served.packs  # a probe that rejected bf16 noise would silently serve padded
    probabilities = served.predict_proba(texts)
    assert (probabilities.argmax(axis=1) == reference.argmax(axis=1)).all()
    np.testing.assert_allclose(probabilities, reference, atol=0.02)


def test_the_serving_log_says_how_the_model_runs(sentiment_settings: Settings) -> None:
    from core.ml.serving import describe, load_for_serving
    from core.ml.versions import production_version

    factory = get_session_factory(sentiment_settings.database_url)
    with factory() as session:
        artifact = Path(production_version(session, "sentiment").artifact_path)
    fp32 = sentiment_settings.model_copy(update={"dtype": "float32"})
    assert describe(load_for_serving(artifact, fp32)) == "torch float32 on cpu, packed batches"
    int8 = sentiment_settings.model_copy(update={"serve_int8": True})
    assert describe(load_for_serving(artifact, int8)) == "ONNX Runtime int8 on cpu"
