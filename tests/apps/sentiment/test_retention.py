"""`TEXTSUITE_SENTIMENT_RETENTION_DAYS`: old articles go, relabelled ones stay."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from apps.sentiment.articles import set_correction
from apps.sentiment.entities import EntityIn, add_entity
from apps.sentiment.models import Article, ArticleEntity
from apps.sentiment.retention import retention
from apps.sentiment.settings import load_sentiment_settings
from core.settings import SettingsError
from core.storage.engine import session_scope


def test_articles_past_the_retention_go_unless_an_analyst_relabelled_them(
    session_factory: sessionmaker[Session],
) -> None:
    now = dt.datetime.now(dt.UTC)
    with session_scope(session_factory) as session:
        entity = add_entity(session, EntityIn(ticker="CRBK", name="Corvid Bank"))
        ids = {}
        for title, age_days in [("old", 40), ("old, relabelled", 41), ("recent", 3)]:
            published = now - dt.timedelta(days=age_days)
            article = Article(source="wire", title=title, content_hash=title,
                              published_at=published)  # fmt: skip
            session.add(article)
            session.flush()
            session.add(ArticleEntity(article_id=article.id, entity_id=entity.id,
                                      published_at=published))  # fmt: skip
            ids[title] = article.id
        set_correction(session, ids["old, relabelled"], "negative", "ana")
    assert retention(30, session_factory).run() == 1
    with session_factory() as session:
        kept = set(session.scalars(select(Article.title)))
        links = session.scalar(select(func.count()).select_from(ArticleEntity))
    assert kept == {"old, relabelled", "recent"} and links == 2


def test_retention_shorter_than_the_alert_baselines_is_refused() -> None:
    with pytest.raises(SettingsError, match="keep articles at least 8 days"):
        load_sentiment_settings(_env_file=None, retention_days=3)
    assert load_sentiment_settings(_env_file=None, retention_days=0).retention_days == 0


def test_what_the_longest_alert_rule_still_reads_is_kept(
    session_factory: sessionmaker[Session],
) -> None:
    """A 20-day rule reads 20 days and the week of baseline before them: with 10 days of
    retention, an article 25 days old stays and one 40 days old goes."""
    from apps.sentiment.models import AlertRule, RuleKind

    now = dt.datetime.now(dt.UTC)
    with session_scope(session_factory) as session:
        session.add(AlertRule(name="slow-drift-20d", kind=RuleKind.Z_SCORE,
                              window_s=20 * 86400, threshold=-3.0))  # fmt: skip
        for title, age_days in [("forty", 40), ("twenty-five", 25)]:
            session.add(Article(source="wire", title=title, content_hash=title,
                                published_at=now - dt.timedelta(days=age_days)))  # fmt: skip
    assert retention(10, session_factory).run() == 1
    with session_factory() as session:
        assert session.scalars(select(Article.title)).all() == ["twenty-five"]
