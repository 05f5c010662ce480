"""Storing articles once, whichever key (source id, URL, text) says it was seen before."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from apps.sentiment import articles as articles_module
from apps.sentiment.articles import (
    MAX_TEXT_CHARS,
    ArticleIn,
    Stored,
    content_hash,
    store_articles,
)
from apps.sentiment.entities import EntityIn, add_entity, load_matcher
from apps.sentiment.models import Article, ArticleEntity
from core.storage.engine import session_scope

WHEN = dt.datetime(2026, 11, 26, 13, 0, tzinfo=dt.UTC)


def count(session: Session) -> int:
    return session.scalar(select(func.count(Article.id)))


def store(factory: sessionmaker[Session], *items: ArticleIn) -> list:
    with session_scope(factory) as session:
        return store_articles(session, items, load_matcher(session))


def test_each_key_recognises_a_repeat(session_factory: sessionmaker[Session]) -> None:
    first = store(
        session_factory,
        ArticleIn(id="w-1", source="wire", url="https://n.example/a#top", title="Apple beats"),
    )[0]
    assert first.created
    repeats = store(
        session_factory,
        ArticleIn(id="w-1", source="wire", title="Apple beats estimates (updated)"),  # same id
        ArticleIn(url="https://n.example/a", title="Apple beats, again"),  # same URL, no fragment
        ArticleIn(source="other", title="  APPLE   beats "),  # same text, other outlet
        ArticleIn(id="w-1", source="desk", title="Apple misses"),  # id of another source: new
    )
    assert [r.created for r in repeats] == [False, False, False, True]
    assert {r.article_id for r in repeats[:3]} == {first.article_id}
    with session_factory() as session:
        assert count(session) == 2


def test_repeats_inside_one_batch_point_to_the_first(
    session_factory: sessionmaker[Session],
) -> None:
    results = store(
        session_factory,
        ArticleIn(title="Tesla recalls cars"),
        ArticleIn(title="tesla recalls  cars"),
        ArticleIn(title="Tesla recalls cars", body="More details."),  # the body differs: new
    )
    assert [r.created for r in results] == [True, False, True]
    assert results[0].article_id == results[1].article_id


def test_a_concurrent_insert_is_stopped_by_the_constraints(
    session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two deliveries that both looked and found nothing: the database's unique constraints
    refuse the second insert, and looking again finds the first."""
    winner = store(session_factory, ArticleIn(url="https://n.example/b", title="Fed holds"))[0]
    monkeypatch.setattr(articles_module, "_existing", lambda session, keys: {})
    with pytest.raises(IntegrityError):
        store(session_factory, ArticleIn(url="https://n.example/b", title="Fed holds rates"))
    monkeypatch.undo()
    [again] = store(session_factory, ArticleIn(url="https://n.example/b", title="Fed holds rates"))
    assert again == Stored(winner.article_id, created=False)
    with session_factory() as session:
        assert count(session) == 1


def test_articles_are_linked_to_the_entities_they_mention(
    session_factory: sessionmaker[Session],
) -> None:
    with session_scope(session_factory) as session:
        apple = add_entity(session, EntityIn(ticker="AAPL", name="Apple")).id
        tesla = add_entity(
            session, EntityIn(ticker="TSLA", name="Tesla", aliases=["Musk's EV maker"])
        ).id
    results = store(
        session_factory,
        ArticleIn(title="Apple and Tesla lead gains", published_at=WHEN),
        ArticleIn(title="Musk's EV maker cuts prices"),
        ArticleIn(title="Gold steadies"),
    )
    with session_factory() as session:
        links = session.execute(select(ArticleEntity.article_id, ArticleEntity.entity_id)).all()
        when = session.scalar(
            select(ArticleEntity.published_at).where(
                ArticleEntity.article_id == results[0].article_id
            )
        )
    assert sorted(links) == sorted(
        [
            (results[0].article_id, apple),
            (results[0].article_id, tesla),
            (results[1].article_id, tesla),
        ]
    )
    assert when == WHEN  # denormalised for per-entity windows


def test_bad_articles_are_refused_with_a_reason() -> None:
    with pytest.raises(ValidationError, match="title"):
        ArticleIn(title="   ")
    with pytest.raises(ValidationError, match="timezone"):
        ArticleIn(title="x", published_at=dt.datetime(2026, 11, 26, 13, 0))
    with pytest.raises(ValidationError, match="before 1970"):  # windows back from it overflow
        ArticleIn(title="x", published_at=dt.datetime(1, 1, 1, tzinfo=dt.UTC))
    with pytest.raises(ValidationError, match=f"the limit is {MAX_TEXT_CHARS}"):
        ArticleIn(title="x" * 15_000, body="y" * 15_000)
    with pytest.raises(ValidationError, match="url"):
        ArticleIn(title="x", url="not a link")
    with pytest.raises(ValidationError, match="more than 2000 characters"):
        ArticleIn(title="x", url="https://news.example/" + "a" * 2000)
    with pytest.raises(ValidationError, match="extra"):
        ArticleIn(title="x", sentiment="positive")


def test_personal_data_in_articles_is_masked_before_it_is_stored() -> None:
    article = ArticleIn(
        title="Acme recalls heaters; questions to press@acme-corp.com",
        body="Call +1 415 555 0100 or (415) 555-2671. Shares fell 4.5% to $120.35 on 2026-11-26.",
    )
    assert article.title == "Acme recalls heaters; questions to [EMAIL]"
    assert article.body == "Call [PHONE] or [PHONE]. Shares fell 4.5% to $120.35 on 2026-11-26."


def test_the_content_hash_ignores_case_width_and_spacing() -> None:
    assert content_hash("Apple  beats\nestimates", None) == content_hash(
        "APPLE beats estimates", ""
    )
    assert content_hash("\uff21\uff50\uff50\uff4c\uff45 beats", None) == content_hash(
        "Apple beats", None
    )
    assert content_hash("Apple beats", None) != content_hash("Apple misses", None)


def test_nul_characters_are_dropped_from_articles() -> None:
    article = ArticleIn(id="w\x00-1", title="Acme\x00 up 5%", body="\x00strong quarter")
    assert (article.id, article.title, article.body) == ("w-1", "Acme up 5%", "strong quarter")
    with pytest.raises(ValidationError, match="title"):
        ArticleIn(title="\x00")  # nothing left of it


def test_an_analysts_label_is_set_once_per_article_on_both_backends(
    session_factory: sessionmaker[Session],
) -> None:
    """Two analysts relabelling one article at once leave one correction, the later one
    (an upsert: no unique-constraint error); a deleted article's corrections go with it."""
    from apps.sentiment.articles import set_correction
    from apps.sentiment.models import LabelCorrection

    with session_scope(session_factory) as session:
        article = Article(source="wire", title="Corvid Bank to close 40 branches",
                          content_hash="h-1", published_at=dt.datetime.now(dt.UTC))  # fmt: skip
        session.add(article)
        session.flush()
        article_id = article.id
    for label, analyst in [("positive", "ana"), ("neutral", "ben")]:
        with session_scope(session_factory) as session:
            set_correction(session, article_id, label, analyst)
    with session_factory() as session:
        [kept] = session.scalars(select(LabelCorrection)).all()
        assert (kept.label, kept.analyst) == ("neutral", "ben")
        assert kept.updated_at >= kept.created_at
    with session_scope(session_factory) as session:
        session.delete(session.get(Article, article_id))
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(LabelCorrection)) == 0
