"""`sentiment_stats` on both backends: versions named by model and number, corrections only
where the version that scored the article is known."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from apps.sentiment.articles import set_correction
from apps.sentiment.models import Article
from apps.sentiment.stats import sentiment_stats
from core.ml.versions import record_version
from core.storage.engine import session_scope


def test_versions_of_two_models_and_of_none_are_kept_apart(
    session_factory: sessionmaker[Session],
) -> None:
    now = dt.datetime.now(dt.UTC)
    with session_scope(session_factory) as session:
        versions = {
            name: record_version(session, name=name, task="classification", base_model="m",
                                 artifact_path=Path("/tmp/x"), metrics={}, config={}).id
            for name in ("sentiment", "sentiment-fin")
        }  # fmt: skip
        rows = [("a", "sentiment", "negative"), ("b", "sentiment-fin", "neutral"),
                ("c", None, "positive"), ("d", None, None)]  # fmt: skip
        ids = {}
        for title, model, label in rows:
            article = Article(source="wire", title=title, content_hash=title, published_at=now,
                              label=label, model_version_id=versions.get(model))  # fmt: skip
            session.add(article)
            session.flush()
            ids[title] = article.id
        set_correction(session, ids["b"], "negative", "ana")
        set_correction(session, ids["c"], "negative", "ana")  # its version was deleted
    with session_factory() as session:
        stats = sentiment_stats(session, now - dt.timedelta(hours=1), now + dt.timedelta(hours=1))
    assert (stats.articles, stats.unscored) == (4, 1)
    assert list(stats.versions) == ["sentiment v1", "sentiment-fin v1"]
    assert stats.versions["sentiment-fin v1"].corrections == {"neutral -> negative": 1}
    assert stats.corrections == {"neutral -> negative": 1}  # not the deleted version's
