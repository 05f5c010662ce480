"""Items and events on both backends: idempotent upserts and deliveries, all-or-nothing."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session, sessionmaker

from apps.recommend.catalogue import (
    ItemChange,
    ItemIn,
    UpsertReport,
    items_by_external_id,
    store_items,
    text_hash,
    text_of,
    upsert_items,
)
from apps.recommend.events import EventIn, EventRejected, record_events
from apps.recommend.models import Interaction, Item
from core.storage.engine import get_session_factory
from tests.conftest import _truncate, make_settings


def test_items_upsert_by_external_id(db_session: Session) -> None:
    first = upsert_items(
        db_session,
        [ItemIn(external_id="A", title="Tent"), ItemIn(external_id="B", title="Stove")],
    )
    assert (first.created, first.updated, len(first.to_embed)) == (2, 0, 2)
    again = upsert_items(
        db_session,
        [
            ItemIn(external_id="A", title="Tent"),  # unchanged
            ItemIn(external_id="B", title="Stove", attributes={"price": 3}),  # not text
            ItemIn(external_id="C", title="Mat", tags=["camp", "camp"]),
        ],
    )
    assert (again.created, again.updated, again.unchanged, len(again.to_embed)) == (1, 1, 1, 1)
    retitled = upsert_items(db_session, [ItemIn(external_id="A", title="Tunnel tent")])
    assert retitled.updated == 1 and len(retitled.to_embed) == 1
    mat = db_session.scalar(select(Item).where(Item.external_id == "C"))
    assert mat.tags == ["camp"]


def test_lookups_take_more_ids_than_one_statement_binds(db_session: Session) -> None:
    upsert_items(db_session, [ItemIn(external_id="A", title="Tent")])
    asked = [f"X{i}" for i in range(300_000)] + ["A"]  # beyond SQLite's and PostgreSQL's limits
    assert list(items_by_external_id(db_session, asked)) == ["A"]


def test_events_are_stored_once_and_bad_batches_store_nothing(db_session: Session) -> None:
    upsert_items(db_session, [ItemIn(external_id="A", title="Tent")])
    at = dt.datetime(2026, 11, 1, 12, tzinfo=dt.UTC)
    anonymous = EventIn(user_id="u", item_id="A", type="view", timestamp=at)
    named = EventIn(event_id="e1", user_id="u", item_id="A", type="purchase", timestamp=at)
    assert record_events(db_session, [anonymous, named]).stored == 2
    repeat = record_events(db_session, [anonymous, named, anonymous])
    assert (repeat.stored, repeat.duplicates) == (0, 3)
    with pytest.raises(EventRejected, match="unknown item 'Z'") as caught:
        record_events(db_session, [EventIn(event_id="e2", user_id="u", item_id="Z", type="view")])
    assert list(caught.value.problems) == [0]
    assert db_session.scalar(select(func.count(Interaction.id))) == 2


def test_lists_are_served_and_logged_on_both_backends(
    database_url: str, session_factory, tmp_path
) -> None:
    import numpy as np

    from apps.recommend.embeddings import store_vectors
    from apps.recommend.models import Recommendation
    from apps.recommend.recommending import Filters, recommend_for_user
    from apps.recommend.settings import load_recommend_settings
    from apps.recommend.state import CatalogueState
    from core.storage.engine import session_scope
    from tests.conftest import make_settings

    settings = make_settings(database_url=database_url, artifacts_dir=tmp_path)
    recommend = load_recommend_settings(_env_file=None)
    with session_scope(session_factory) as session:
        report = upsert_items(
            session, [ItemIn(external_id=f"I{i}", title=f"Item {i}") for i in range(6)]
        )
        record_events(session, [EventIn(user_id="u", item_id="I0", type="purchase")])
    vectors = np.eye(6, 8, dtype=np.float32) + 0.1  # I1 nearest I0 after itself, by design
    vectors[1, 0] = 0.9
    store_vectors(session_factory, "model:all-MiniLM-L6-v2", report.to_embed, vectors, ["h"] * 6)
    state = CatalogueState(settings, recommend, session_factory)
    state.refresh()
    state.refresh_behaviour()
    statements: list[str] = []
    engine = session_factory.kw["bind"]

    def record(conn, cursor, statement, *args) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        assert state.refresh() is False
    finally:
        event.remove(engine, "before_cursor_execute", record)
    # The vectors just loaded are not read again (only their hashes are checked).
    assert statements and not any("recommend_item_embeddings.vector" in s for s in statements)
    with session_factory() as session:
        served = recommend_for_user(state, session, "u", 3, Filters(), recommend)
    shown = [r.facts.external_id for r in served.items]
    assert shown[0] == "I1" and "I0" not in shown
    with session_factory() as session:
        logged = session.get(Recommendation, served.id)
    assert logged.user_id == "u" and logged.items[0][0] == "I1"


def test_stats_name_a_tuned_encoder_by_its_version(db_session: Session) -> None:
    from pathlib import Path

    from apps.recommend.models import Recommendation, RecommendationKind
    from apps.recommend.stats import recommend_stats
    from core.ml.versions import record_version

    version = record_version(db_session, name="recommend-encoder", task="embedding",
                             base_model="all-MiniLM-L6-v2", artifact_path=Path("/tmp/v1"),
                             metrics={}, config={})  # fmt: skip
    for encoder in ("model:all-MiniLM-L6-v2", f"version:{version.id}", f"version:{version.id}",
                    "version:not-a-uuid", None):  # fmt: skip
        db_session.add(Recommendation(kind=RecommendationKind.USER, encoder=encoder))
    db_session.flush()
    now = dt.datetime.now(dt.UTC)
    stats = recommend_stats(db_session, now - dt.timedelta(hours=1), now + dt.timedelta(hours=1))
    lists = {name: tally.lists for name, tally in stats.by_encoder.items()}
    assert lists == {"model:all-MiniLM-L6-v2": 1, "recommend-encoder v1": 2,
                     "version:not-a-uuid": 1, "none": 1}  # fmt: skip
    assert stats.by_kind["user"].lists == 5 and stats.by_kind["user"].feedback_rate == 0.0


def test_two_runs_storing_the_same_vectors_at_once_both_succeed(
    database_url: str, session_factory
) -> None:
    """A training job embeds the catalogue while an embedding job does the same items."""
    import threading

    import numpy as np

    from apps.recommend.embeddings import store_vectors
    from apps.recommend.models import ItemEmbedding
    from core.storage.engine import session_scope

    with session_scope(session_factory) as session:
        ids = upsert_items(
            session, [ItemIn(external_id=f"I{i}", title=f"Item {i}") for i in range(200)]
        ).to_embed
    start, failures = threading.Barrier(2), []

    def run(seed: int) -> None:
        vectors = np.random.default_rng(seed).random((len(ids), 8), dtype=np.float32)
        for _ in range(5):
            start.wait()
            try:
                store_vectors(session_factory, "model:x", ids, vectors, [f"h{seed}"] * len(ids))
            except Exception as exc:
                failures.append(exc)

    threads = [threading.Thread(target=run, args=(seed,)) for seed in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    with session_factory() as session:
        rows = session.execute(select(ItemEmbedding.text_hash)).scalars().all()
    assert len(rows) == 200 and set(rows) <= {"h1", "h2"}


def test_an_item_sent_again_keeps_what_it_leaves_out(db_session: Session) -> None:
    """A catalogue file re-sent without an `active` column does not bring back a retired
    item, nor does an update without a description clear it; `null` does."""
    upsert_items(db_session, [ItemIn(external_id="A", title="Tent", description="Two person")])
    db_session.scalar(select(Item).where(Item.external_id == "A")).active = False
    again = upsert_items(db_session, [ItemIn.model_validate({"id": "A", "title": "Tent"})])
    tent = db_session.scalar(select(Item).where(Item.external_id == "A"))
    assert again.unchanged == 1 and tent.active is False and tent.description == "Two person"
    cleared = upsert_items(
        db_session, [ItemIn.model_validate({"id": "A", "title": "Tent", "description": None})]
    )
    assert cleared.updated == 1 and len(cleared.to_embed) == 1 and tent.description is None
    assert tent.text_hash == text_hash(text_of(tent))  # of the text as stored


def test_two_processes_writing_one_item_at_once(postgres_url: str) -> None:
    """A new item created by two API processes at once: one creates it, the other finds it
    and updates it (no 500); an update waits for the other's, so neither is half applied."""
    factory = get_session_factory(postgres_url)
    try:
        for first_fields, second_fields, expected in [
            ({"title": "A"}, {"title": "B", "tags": ["x"]}, ("B", ["x"])),  # both create
            ({"title": "A", "tags": ["x"]}, {"title": "B", "tags": []}, ("B", [])),  # update
        ]:
            first = factory()
            upsert_items(first, [ItemIn(external_id="N", **first_fields)])  # not committed
            reports: list[UpsertReport] = []

            def second(fields: dict, reports: list[UpsertReport]) -> None:
                with factory() as session:
                    reports.append(store_items(session, [ItemIn(external_id="N", **fields)]))

            thread = threading.Thread(target=second, args=(second_fields, reports))
            thread.start()
            time.sleep(0.5)  # it waits for the first's row: its insert, or its lock
            first.commit()
            first.close()
            thread.join(timeout=30)
            assert [r.changes for r in reports] == [{"N": ItemChange.UPDATED}]
            with factory() as session:
                item = session.scalar(select(Item).where(Item.external_id == "N"))
                assert (item.title, item.tags) == expected
                assert item.text_hash == text_hash(text_of(item))
    finally:
        _truncate(postgres_url)


def test_a_history_imported_from_the_past_still_makes_the_behaviour(db_session: Session) -> None:
    """MovieLens' 1998 ratings, with nothing since: the window counts back from the newest
    event, not from today, or popularity and co-interactions would be empty."""
    from apps.recommend.settings import load_recommend_settings
    from apps.recommend.state import read_behaviour

    upsert_items(db_session, [ItemIn(external_id=i, title=f"Film {i}") for i in "ABC"])
    old = dt.datetime(1998, 4, 1, tzinfo=dt.UTC)
    events = [("u1", "A"), ("u1", "B"), ("u2", "A"), ("u2", "B"), ("u3", "A"), ("u9", "C")]
    record_events(db_session, [
        EventIn(event_id=f"e{n}", user_id=user, item_id=item, type="view",
                timestamp=old - dt.timedelta(days=400 if user == "u9" else n))
        for n, (user, item) in enumerate(events)
    ])  # fmt: skip
    behaviour = read_behaviour(db_session, load_recommend_settings(_env_file=None))
    assert behaviour.events == 5  # u9's, 400 days before the newest, is past the 180
    most = [behaviour.keys[p] for p in behaviour.popular_order[:2]]
    ids = {i.id: i.external_id for i in db_session.scalars(select(Item))}
    assert [ids[uuid.UUID(key)] for key in most] == ["A", "B"]


def test_a_burst_of_item_writes_asks_for_one_embedding_job(
    session_factory: sessionmaker[Session],
) -> None:
    """A job not started yet embeds whatever is pending when it starts: sixty updates in a
    burst make one job; once it runs, the next write asks for another."""
    from apps.recommend.embeddings import EMBED_JOB
    from apps.recommend.service import RecommendService
    from apps.recommend.settings import load_recommend_settings
    from core.storage.models import Job, JobStatus
    from tests.apps.sentiment.test_notify import Broker

    broker = Broker()
    broker.down = False  # records what it is sent, runs nothing
    service = RecommendService.create(
        make_settings(), load_recommend_settings(_env_file=None), session_factory, broker
    )
    asked = {service.request_embedding() for _ in range(60)}
    assert len(asked) == 1 and len(broker.sent) == 1
    with session_factory() as session:
        job = session.get(Job, uuid.UUID(asked.pop()))
        assert job.kind == EMBED_JOB
        job.status = JobStatus.RUNNING
        session.commit()
    assert service.request_embedding() != str(job.id) and len(broker.sent) == 2
