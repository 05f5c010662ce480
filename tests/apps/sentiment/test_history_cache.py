"""The alert windows' history cache returns what a fresh read of the database returns: after
other writers' commits, late commits within the settling time, rollbacks, a moving span, and
a watchlist change that links old articles."""

from __future__ import annotations

import datetime as dt
import random
import uuid

import pytest
from sqlalchemy.orm import Session, sessionmaker

from apps.sentiment.alerts import ensure_default_rules
from apps.sentiment.articles import ArticleIn
from apps.sentiment.entities import EntityIn, link_recent_articles, upsert_entities
from apps.sentiment.models import Entity
from apps.sentiment.windows import (
    BASELINE_S,
    EntityHistory,
    HistoryCache,
    Span,
    read_histories,
)
from core.settings import Settings
from core.storage.engine import get_session_factory, session_scope
from tests.apps.sentiment.test_alerts import add_articles
from tests.apps.sentiment.test_ingest import ingestor_for

T0 = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
SECOND = dt.timedelta(seconds=1)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


def add(
    session: Session, entity_id: uuid.UUID, published: dt.datetime, scored: dt.datetime
) -> None:
    score = random.Random(published.timestamp()).uniform(-1, 1)
    add_articles(session, entity_id, [(score, published)], scored_at=scored)


def week_to(now: dt.datetime) -> Span:
    return (now - dt.timedelta(seconds=BASELINE_S + 3600), now)


def articles(history: EntityHistory, span: Span) -> list[list[float]]:
    """What every window inside `span` can see: (time, score, negative) rows."""
    return history.between(*span).tolist()


def same_as_database(cache: HistoryCache, session: Session, spans: dict[uuid.UUID, Span]) -> None:
    cached = cache.read(session, spans)
    fresh = read_histories(session, spans)
    assert cached.keys() == fresh.keys()
    for entity_id in spans:
        span = spans[entity_id]
        assert articles(cached[entity_id], span) == articles(fresh[entity_id], span), entity_id


@pytest.fixture
def entities(session_factory: sessionmaker[Session]) -> list[uuid.UUID]:
    with session_scope(session_factory) as session:
        found = [Entity(id=uuid.uuid4(), ticker=f"HC{n}", name=f"Cache {n}") for n in range(2)]
        session.add_all(found)
        session.flush()
        for entity in found:  # a week of history, scored long ago
            for hour in range(0, 24 * 8):
                when = T0 - dt.timedelta(hours=hour)
                add(session, entity.id, when, when + SECOND)
        return [entity.id for entity in found]


def test_the_cache_follows_every_commit_it_can_see(
    session_factory: sessionmaker[Session], entities: list[uuid.UUID]
) -> None:
    clock = Clock()
    cache = HistoryCache(settle_s=15, refresh_s=300, gap_s=300, clock=clock)
    spans = {entity_id: week_to(T0) for entity_id in entities}
    with session_factory() as session:
        same_as_database(cache, session, spans)  # the first read: whole spans

    # Another writer commits: one article scored a moment ago, one published days ago
    # (a replay) but scored now.
    with session_scope(session_factory) as session:
        add(session, entities[0], T0 - 2 * SECOND, clock.now - SECOND)
        add(session, entities[1], T0 - dt.timedelta(days=3), clock.now - SECOND)
    clock.now += 5 * SECOND
    with session_factory() as session:
        same_as_database(cache, session, spans)

    # A commit that lands 10 s after its scoring time: still inside the settling time.
    clock.now += 20 * SECOND
    late_scored = clock.now - 10 * SECOND
    with session_factory() as session:
        same_as_database(cache, session, spans)
    with session_scope(session_factory) as session:
        add(session, entities[0], T0 - 3 * SECOND, late_scored)
    clock.now += 30 * SECOND
    with session_factory() as session:
        same_as_database(cache, session, spans)


def test_rows_of_a_rolled_back_batch_do_not_stay(
    session_factory: sessionmaker[Session], entities: list[uuid.UUID]
) -> None:
    clock = Clock()
    cache = HistoryCache(settle_s=15, gap_s=300, clock=clock)
    spans = {entities[0]: week_to(T0)}
    with session_factory() as session:
        cache.read(session, spans)
    with session_factory() as session:  # a batch: its own rows count while it runs...
        add(session, entities[0], T0 - SECOND, clock.now)
        before = len(articles(read_histories(session, spans)[entities[0]], spans[entities[0]]))
        assert len(articles(cache.read(session, spans)[entities[0]], spans[entities[0]])) == before
        session.rollback()  # ...and then it fails
    clock.now += 60 * SECOND
    with session_factory() as session:
        same_as_database(cache, session, spans)
        assert len(articles(cache.read(session, spans)[entities[0]], spans[entities[0]])) == (
            before - 1
        )


def test_a_moving_span_drops_old_articles_and_an_earlier_one_reads_again(
    session_factory: sessionmaker[Session], entities: list[uuid.UUID]
) -> None:
    clock = Clock()
    cache = HistoryCache(clock=clock)
    with session_factory() as session:
        same_as_database(cache, session, {entities[0]: week_to(T0)})
        later = {entities[0]: week_to(T0 + dt.timedelta(days=1))}
        same_as_database(cache, session, later)
        # A replayed article asks for a span starting before what the cache kept.
        earlier = {entities[0]: week_to(T0 - dt.timedelta(days=1))}
        same_as_database(cache, session, earlier)


def test_a_back_dated_batch_read_first_leaves_nothing_out_of_the_next(
    session_factory: sessionmaker[Session], entities: list[uuid.UUID]
) -> None:
    """A replayed article evaluates its company hours back; the batch after it, at the
    present, must still see the articles published since then (scored long before)."""
    clock = Clock()
    cache = HistoryCache(clock=clock)
    with session_factory() as session:
        same_as_database(cache, session, {entities[0]: week_to(T0 - dt.timedelta(hours=2.5))})
        clock.now += SECOND
        same_as_database(cache, session, {entities[0]: week_to(T0)})


@pytest.mark.parametrize(
    ("refresh_s", "gap_s"),
    [(300, 3000), (3000, 300)],
    ids=["read-whole-every-refresh", "read-whole-after-a-gap"],
)
def test_a_commit_later_than_the_settling_time_is_seen_at_the_next_whole_read(
    session_factory: sessionmaker[Session], entities: list[uuid.UUID], refresh_s: int, gap_s: int
) -> None:
    clock = Clock()
    cache = HistoryCache(settle_s=15, refresh_s=refresh_s, gap_s=gap_s, clock=clock)
    spans = {entities[0]: week_to(T0)}
    with session_factory() as session:
        cache.read(session, spans)
    with session_scope(session_factory) as session:  # scored 60 s before it committed
        add(session, entities[0], T0 - SECOND, clock.now - 60 * SECOND)
    with session_factory() as session:
        missed = len(read_histories(session, spans)[entities[0]])
        assert len(articles(cache.read(session, spans)[entities[0]], spans[entities[0]])) == (
            missed - 1
        )
        clock.now += 301 * SECOND
        same_as_database(cache, session, spans)


def test_an_ingestor_reads_again_when_the_watchlist_changes(
    sentiment_settings: Settings,
) -> None:
    factory = get_session_factory(sentiment_settings.database_url)
    with session_scope(factory) as session:
        upsert_entities(session, [EntityIn(ticker="ACMQ", name="Acme Quarry")])
        ensure_default_rules(session)  # evaluated entities have their histories read
    ingestor = ingestor_for(sentiment_settings)
    clock = Clock()
    clock.now = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)  # all that is read is settled
    ingestor.histories = HistoryCache(clock=clock)
    ingestor.ingest([ArticleIn(title="$ACMQ opens a plant")])
    ingestor.ingest([ArticleIn(title="Roadrunner Corp wins a contract")])  # no company on it
    with session_scope(factory) as session:  # an alias: the older article is linked now
        [entity] = upsert_entities(
            session, [EntityIn(ticker="ACMQ", name="Acme Quarry", aliases=["Roadrunner Corp"])]
        )
        assert link_recent_articles(session, entity, T0 - dt.timedelta(days=365)) == 1
        entity_id = entity.id
    ingestor.ingest([ArticleIn(title="$ACMQ expands")])
    now = dt.datetime.now(dt.UTC)
    with factory() as session:
        spans = {entity_id: week_to(now)}
        assert ingestor.histories._kept.keys() == {entity_id}  # read from what was kept
        history = articles(ingestor.histories.read(session, spans)[entity_id], spans[entity_id])
        assert history == articles(read_histories(session, spans)[entity_id], spans[entity_id])
        assert len(history) == 3
