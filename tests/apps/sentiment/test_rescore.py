"""Rescoring stored articles against a promotion on PostgreSQL: each batch is written only
while its version is production, and a promotion waits for the batch in flight."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

from sqlalchemy import create_engine, select

from apps.sentiment.models import Article
from apps.sentiment.scoring import SentimentScorer
from core.ml.serving import ProductionClassifier
from core.ml.versions import production_version, promote
from core.storage.base import utcnow
from core.storage.engine import get_session_factory, session_scope
from core.storage.models import ModelStage, ModelVersion
from tests.conftest import _truncate, make_settings


def _versions_from(world: Path) -> list[ModelVersion]:
    """The world's production sentiment version as v1 (production) and v2 (archived)."""
    engine = create_engine(f"sqlite:///{world}")
    with get_session_factory(str(engine.url))() as session:
        source = production_version(session, "sentiment")
        assert source is not None
        columns = {
            column.key: getattr(source, column.key)
            for column in ModelVersion.__table__.columns
            if column.key not in {"id", "training_run_id", "version", "stage"}
        }
    engine.dispose()
    return [
        ModelVersion(**columns, version=1, stage=ModelStage.PRODUCTION),
        ModelVersion(**columns, version=2, stage=ModelStage.ARCHIVED),
    ]


def test_a_promotion_waits_for_the_batch_written_under_the_old_version(
    sentiment_world: Path, postgres_url: str, tmp_path: Path
) -> None:
    settings = make_settings(
        database_url=postgres_url,
        artifacts_dir=sentiment_world.parent / "artifacts",
        var_dir=tmp_path / "var",
    )
    factory = get_session_factory(postgres_url)
    try:
        with session_scope(factory) as session:
            first, second = _versions_from(sentiment_world)
            session.add_all([first, second])
            session.add_all(
                Article(
                    source="test",
                    content_hash=f"{i:064d}",
                    title=f"Northwind Robotics shares plunge (item {i})",
                    published_at=utcnow(),
                    label="positive",
                    score=0.99,  # as an older version scored them
                )
                for i in range(4)
            )
        scorer = SentimentScorer(ProductionClassifier(settings, factory, "sentiment"))
        scoring, release = threading.Event(), threading.Event()
        write = scorer._score

        def held(session, articles, served=None):  # the first batch waits, lock held
            scoring.set()
            assert release.wait(30)
            return write(session, articles, served)

        scorer._score = held  # type: ignore[method-assign]
        outcome: dict[str, object] = {}
        rescoring = threading.Thread(
            target=lambda: outcome.update(done=scorer.rescore_others(factory, batch=2))
        )
        rescoring.start()
        assert scoring.wait(60)

        def promote_second() -> None:
            with session_scope(factory) as session:
                promote(session, "sentiment", 2, force=True)

        promoting = threading.Thread(target=promote_second)
        promoting.start()
        promoting.join(1.0)
        waited = promoting.is_alive()  # the batch in flight holds v1's row
        release.set()
        rescoring.join(60)
        promoting.join(60)
        assert waited
        assert outcome["done"] == (2, 1)  # one batch, then it saw v2 promoted and stopped
        with factory() as session:
            assert production_version(session, "sentiment").version == 2
            by = session.scalars(select(Article.model_version_id)).all()
        assert Counter(by) == {first.id: 2, None: 2}  # the second batch was left to v2's run
    finally:
        release.set()
        _truncate(postgres_url)
