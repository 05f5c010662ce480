"""Windows, rules and the alert lifecycle, on scored articles written straight to the database
(both backends): no model needed to test the arithmetic and the state machine."""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from apps.sentiment.alerts import (
    DEFAULT_RULES,
    AlertChange,
    _coalesced,
    close_rule_alerts,
    ensure_default_rules,
    evaluate,
    evaluate_entities,
)
from apps.sentiment.models import (
    Alert,
    AlertRule,
    AlertState,
    Article,
    ArticleEntity,
    Entity,
    RuleKind,
)
from apps.sentiment.windows import (
    BASELINE_S,
    HALF_LIFE_S,
    EntityHistory,
    ScoredArticle,
    window_stats,
)
from core.storage.engine import session_scope
from tests.apps.sentiment.conftest import statements_run

T0 = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


def label_of(score: float) -> str:
    return "negative" if score < -0.3 else "positive" if score > 0.3 else "neutral"


def add_articles(
    session: Session,
    entity_id: uuid.UUID,
    scores_and_times: list[tuple[float, dt.datetime]],
    *,
    scored_at: dt.datetime | None = None,
) -> None:
    for score, when in scores_and_times:
        article = Article(
            id=uuid.uuid4(),
            source="test",
            content_hash=uuid.uuid4().hex,
            title="x",
            published_at=when,
            label=label_of(score),
            score=score,
            scored_at=scored_at,
        )
        session.add(article)
        session.add(ArticleEntity(article_id=article.id, entity_id=entity_id, published_at=when))
    session.flush()


@pytest.fixture
def world(session_factory: sessionmaker[Session]) -> tuple[sessionmaker[Session], uuid.UUID]:
    """An entity with a calm week behind it: 3 mildly positive articles a day."""
    with session_scope(session_factory) as session:
        entity = Entity(id=uuid.uuid4(), ticker="HLVB", name="Halvorsen", aliases=[])
        session.add(entity)
        session.flush()
        calm = [(0.2 if i % 3 else -0.1, T0 - dt.timedelta(hours=8 * i + 2)) for i in range(1, 21)]
        add_articles(session, entity.id, calm)
    return session_factory, entity.id


def rule(session: Session, **overrides: object) -> AlertRule:
    values = {
        "name": "drop",
        "kind": RuleKind.Z_SCORE,
        "window_s": 3600,
        "threshold": -3.0,
        "min_articles": 5,
        "for_s": 0,
        "cooldown_s": 3600,
        **overrides,
    }
    created = AlertRule(**values)
    session.add(created)
    session.flush()
    return created


def burst(
    session: Session, entity_id: uuid.UUID, start: dt.datetime, n: int, score: float = -0.9
) -> None:
    add_articles(
        session, entity_id, [(score, start + dt.timedelta(minutes=5 * i)) for i in range(n)]
    )


def open_alerts(session: Session) -> int:
    return session.scalar(
        select(func.count(Alert.id)).where(Alert.state.in_(["pending", "firing"]))
    )


def test_window_statistics(world) -> None:
    factory, entity_id = world
    with session_scope(factory) as session:
        burst(session, entity_id, T0, 6)
        stats = window_stats(session, entity_id, T0 + dt.timedelta(minutes=30), 3600)
    assert stats.volume == 6 and stats.mean_score == pytest.approx(-0.9)
    assert stats.negative_share == 1.0
    assert stats.baseline_count == 20
    assert 0.0 < stats.baseline_mean < 0.2  # 2 in 3 at +0.2, 1 in 3 at -0.1, recent ones heavier
    assert stats.baseline_sd == pytest.approx(0.14, abs=0.02)
    assert stats.expected_volume == pytest.approx(20 / (7 * 24))  # per hour
    z = stats.value(RuleKind.Z_SCORE)
    assert z == pytest.approx((-0.9 - stats.baseline_mean) / (stats.baseline_sd / 6**0.5))
    assert stats.value(RuleKind.VOLUME_SPIKE) == pytest.approx(6.0)  # expected < 1: floor of 1


def direct_stats(
    articles: list[ScoredArticle], as_of: dt.datetime, window_s: int
) -> tuple[int, float | None, float | None, int, float | None, float | None]:
    """The definition, article by article: what the running sums must agree with."""
    start = as_of - dt.timedelta(seconds=window_s)
    window = [a for a in articles if start < a.published_at <= as_of]
    past = [
        a for a in articles if start - dt.timedelta(seconds=BASELINE_S) < a.published_at <= start
    ]
    mean = sum(a.score for a in window) / len(window) if window else None
    share = sum(a.label == "negative" for a in window) / len(window) if window else None
    base_mean = base_sd = None
    if past:
        weights = [0.5 ** ((start - a.published_at).total_seconds() / HALF_LIFE_S) for a in past]
        base_mean = sum(w * a.score for w, a in zip(weights, past, strict=True)) / sum(weights)
        base_sd = (
            sum(w * (a.score - base_mean) ** 2 for w, a in zip(weights, past, strict=True))
            / sum(weights)
        ) ** 0.5
    return len(window), mean, share, len(past), base_mean, base_sd


@pytest.mark.parametrize("span_days", [9, 2000])  # a week and more; years of replayed news
def test_windows_from_running_sums_agree_with_the_definition(span_days: int) -> None:
    rng = random.Random(span_days)
    end = dt.datetime(2026, 11, 28, 12)
    articles = sorted(
        (
            ScoredArticle(
                end - dt.timedelta(seconds=rng.uniform(0, span_days * 86400)),
                rng.uniform(-1, 1),
                rng.choice(["negative", "neutral", "positive"]),
            )
            for _ in range(3000)
        ),
        key=lambda article: article.published_at,
    )
    history = EntityHistory.of(articles)
    for _ in range(40):
        as_of = end - dt.timedelta(seconds=rng.uniform(0, 2 * 86400))
        for window_s in (900, 3600, 86400):
            stats = history.stats(as_of, window_s)
            got = (
                stats.volume,
                stats.mean_score,
                stats.negative_share,
                stats.baseline_count,
                stats.baseline_mean,
                stats.baseline_sd,
            )
            want = direct_stats(articles, as_of, window_s)
            assert [value is None for value in got] == [value is None for value in want]
            assert [v for v in got if v is not None] == pytest.approx(
                [v for v in want if v is not None], rel=1e-9, abs=1e-12
            )


def test_an_alert_fires_once_then_resolves_then_cools_down(world) -> None:
    factory, entity_id = world
    with session_scope(factory) as session:
        share = rule(session, name="share", kind=RuleKind.NEGATIVE_SHARE, threshold=0.6)
        burst(session, entity_id, T0, 8)
        changes = evaluate(session, entity_id, T0 + dt.timedelta(minutes=35))
        assert [c.state for c in changes] == [AlertState.FIRING]
        # Still holding: the same alert, updated, never a second one.
        assert evaluate(session, entity_id, T0 + dt.timedelta(minutes=40)) == []
        assert open_alerts(session) == 1
        alert = session.get(Alert, changes[0].alert_id)
        assert alert.fired_at == T0 + dt.timedelta(minutes=35) and alert.value == 1.0
        assert alert.details["volume"] == 8 and alert.window_end == T0 + dt.timedelta(minutes=40)
        # Two hours on, the window is empty: resolved.
        later = T0 + 3 * HOUR
        assert evaluate(session, entity_id, later) == [
            AlertChange(alert.id, entity_id, AlertState.RESOLVED)
        ]
        assert alert.resolved_at == later
        # A new burst inside the cooldown opens nothing; after it, a new alert.
        burst(session, entity_id, later, 8)
        assert evaluate(session, entity_id, later + dt.timedelta(minutes=40)) == []
        burst(session, entity_id, later + 2 * HOUR, 8)
        again = evaluate(session, entity_id, later + 2 * HOUR + dt.timedelta(minutes=40))
        assert [c.state for c in again] == [AlertState.FIRING] and again[0].alert_id != alert.id
        assert share.cooldown_s == 3600


def test_a_sharp_drop_is_measured_against_the_entity_s_own_recent_past(world) -> None:
    factory, entity_id = world
    with session_scope(factory) as session:
        rule(session)
        burst(session, entity_id, T0, 8)
        [first] = evaluate(session, entity_id, T0 + dt.timedelta(minutes=40))
        assert session.get(Alert, first.alert_id).value < -3
        assert evaluate(session, entity_id, T0 + 3 * HOUR)[0].state is AlertState.RESOLVED
        # The same bad hour again, after a bad afternoon: the baseline has moved, no alert.
        burst(session, entity_id, T0 + 5 * HOUR, 8)
        assert evaluate(session, entity_id, T0 + 5 * HOUR + dt.timedelta(minutes=40)) == []


def test_pending_until_the_condition_has_held_for_long_enough(world) -> None:
    factory, entity_id = world
    with session_scope(factory) as session:
        rule(session, kind=RuleKind.NEGATIVE_SHARE, threshold=0.6, for_s=600)
        burst(session, entity_id, T0, 6)
        first = evaluate(session, entity_id, T0 + dt.timedelta(minutes=26))
        assert [c.state for c in first] == [AlertState.PENDING]
        assert evaluate(session, entity_id, T0 + dt.timedelta(minutes=30)) == []  # 4 min
        fired = evaluate(session, entity_id, T0 + dt.timedelta(minutes=37))  # 11 min
        assert [c.state for c in fired] == [AlertState.FIRING]
        assert fired[0].alert_id == first[0].alert_id


def test_a_pending_alert_that_never_fired_resolves_without_an_announcement(world) -> None:
    factory, entity_id = world
    with session_scope(factory) as session:
        rule(session, kind=RuleKind.NEGATIVE_SHARE, threshold=0.6, for_s=3600)
        burst(session, entity_id, T0, 6)
        [pending] = evaluate(session, entity_id, T0 + dt.timedelta(minutes=26))
        assert pending.state is AlertState.PENDING
        [resolved] = evaluate(session, entity_id, T0 + 3 * HOUR)  # quiet before the hour held
        assert (resolved.state, resolved.announced) == (AlertState.RESOLVED, False)


def test_too_few_articles_raise_nothing(world) -> None:
    factory, entity_id = world
    with session_scope(factory) as session:
        rule(session)
        rule(session, name="share", kind=RuleKind.NEGATIVE_SHARE, threshold=0.5)
        burst(session, entity_id, T0, 4)
        assert evaluate(session, entity_id, T0 + dt.timedelta(minutes=20)) == []


def test_a_volume_spike(world) -> None:
    factory, entity_id = world
    with session_scope(factory) as session:
        rule(session, kind=RuleKind.VOLUME_SPIKE, threshold=4.0, min_articles=10)
        burst(session, entity_id, T0, 12, score=0.5)  # busy, not negative
        [change] = evaluate(session, entity_id, T0 + dt.timedelta(minutes=59))
        assert session.get(Alert, change.alert_id).value == pytest.approx(12.0)


def test_a_rule_moved_to_another_company_closes_the_alerts_it_no_longer_judges(world) -> None:
    factory, entity_id = world
    with session_scope(factory) as session:
        drop = rule(session)
        burst(session, entity_id, T0, 8)
        [fired] = evaluate(session, entity_id, T0 + dt.timedelta(minutes=40))
        assert close_rule_alerts(session, drop.id, T0 + HOUR, keep=entity_id) == []
        [closed] = close_rule_alerts(session, drop.id, T0 + HOUR, keep=uuid.uuid4())
        assert closed == AlertChange(fired.alert_id, entity_id, AlertState.RESOLVED, True)
        alert = session.get(Alert, fired.alert_id)
        assert alert.state is AlertState.RESOLVED and alert.resolved_at == T0 + HOUR


def test_an_alert_whose_rule_no_longer_applies_resolves_at_the_next_evaluation(world) -> None:
    """Overridden by the company's own rule of its name, or disabled: nothing judges it again,
    so the company's next evaluation (an article, or the sweep of open alerts) resolves it."""
    factory, entity_id = world
    with session_scope(factory) as session:
        shared = rule(session, kind=RuleKind.NEGATIVE_SHARE, threshold=0.6)
        burst(session, entity_id, T0, 8)
        [fired] = evaluate(session, entity_id, T0 + dt.timedelta(minutes=40))
        rule(session, threshold=-100.0, entity_id=entity_id)  # "drop", its own: never fires
        [closed] = evaluate(session, entity_id, T0 + dt.timedelta(minutes=41))
        assert closed == AlertChange(fired.alert_id, entity_id, AlertState.RESOLVED, True)

        session.execute(delete(AlertRule).where(AlertRule.entity_id == entity_id))
        session.expire_all()
        burst(session, entity_id, T0 + 2 * HOUR, 8)
        later = T0 + 2 * HOUR + dt.timedelta(minutes=40)
        [again] = evaluate(session, entity_id, later)  # the shared rule again, past cooldown
        session.get(AlertRule, shared.id).enabled = False  # the only rule left, disabled
        session.flush()
        [stopped] = evaluate(session, entity_id, later + dt.timedelta(minutes=1))
        assert stopped.alert_id == again.alert_id and stopped.state is AlertState.RESOLVED
        assert open_alerts(session) == 0


def test_no_volume_spike_without_a_baseline(world) -> None:
    """A company new to the watchlist has no usual volume: its first busy hour is no spike."""
    factory, _ = world
    with session_scope(factory) as session:
        newcomer = Entity(id=uuid.uuid4(), ticker="NEWC", name="Newcomer", aliases=[])
        session.add(newcomer)
        session.flush()
        rule(session, kind=RuleKind.VOLUME_SPIKE, threshold=4.0, min_articles=10)
        burst(session, newcomer.id, T0, 12, score=0.5)
        stats = window_stats(session, newcomer.id, T0 + dt.timedelta(minutes=59), 3600)
        assert stats.volume == 12 and stats.baseline_count == 0
        assert stats.value(RuleKind.VOLUME_SPIKE) is None
        assert evaluate(session, newcomer.id, T0 + dt.timedelta(minutes=59)) == []


def test_a_notice_that_an_alert_fired_is_not_sent_once_it_resolved(world) -> None:
    """Each notice retries on its own: the firing one must not reach a target after the
    resolved one, leaving it believing the alert still fires."""
    import httpx

    from apps.sentiment.models import WebhookTarget
    from apps.sentiment.notify import NotifyParams, deliver

    factory, entity_id = world
    posted: list[dict] = []

    def target(request: httpx.Request) -> httpx.Response:
        posted.append(json.loads(request.content))
        return httpx.Response(200)

    with session_scope(factory) as session:
        rule(session, name="Smith & Wesson <!channel>", kind=RuleKind.NEGATIVE_SHARE,
             threshold=0.5, window_s=90, min_articles=1)  # fmt: skip
        burst(session, entity_id, T0, 8)
        [fired] = evaluate(session, entity_id, T0 + dt.timedelta(minutes=35))
        hook = WebhookTarget(url="http://127.0.0.1:9/hooks")
        session.add(hook)
        session.flush()
        firing = NotifyParams(alert_id=fired.alert_id, target_id=hook.id, state="firing")
        transport = httpx.MockTransport(target)
        assert deliver(session, firing, delivery_id="d1", transport=transport) == 200
        assert evaluate(session, entity_id, T0 + 5 * HOUR)[0].state is AlertState.RESOLVED
        resolved = NotifyParams(alert_id=fired.alert_id, target_id=hook.id, state="resolved")
        assert deliver(session, resolved, delivery_id="d2", transport=transport) == 200
        assert deliver(session, firing, delivery_id="d3", transport=transport) is None  # stale
    assert [message["alert"]["state"] for message in posted] == ["firing", "resolved"]
    # Slack would notify the whole channel on `<!channel>` in a rule's name: shown literally.
    assert "rule Smith &amp; Wesson &lt;!channel&gt;" in posted[0]["text"]
    assert "in the last 90 s" in posted[0]["blocks"][1]["elements"][0]["text"]


def test_an_entity_rule_overrides_the_global_rule_of_the_same_name(world) -> None:
    factory, entity_id = world
    with session_scope(factory) as session:
        rule(session, name="drop", threshold=-3.0)
        own = rule(session, name="drop", threshold=-100.0, entity_id=entity_id)  # never fires
        burst(session, entity_id, T0, 8)
        assert evaluate(session, entity_id, T0 + dt.timedelta(minutes=40)) == []
        session.delete(own)
        session.flush()
        assert len(evaluate(session, entity_id, T0 + dt.timedelta(minutes=41))) == 1


def test_a_late_older_article_does_not_move_time_back(world) -> None:
    factory, entity_id = world
    with session_scope(factory) as session:
        rule(session)
        burst(session, entity_id, T0, 8)
        [fired] = evaluate(session, entity_id, T0 + dt.timedelta(minutes=40))
        assert evaluate(session, entity_id, T0 - 5 * HOUR) == []  # would resolve if it could
        assert session.get(Alert, fired.alert_id).state is AlertState.FIRING


def test_the_database_refuses_a_second_open_alert(world) -> None:
    factory, entity_id = world
    with session_scope(factory) as session:
        drop_id = rule(session).id

    def alert(state: AlertState) -> Alert:
        return Alert(
            entity_id=entity_id, rule_id=drop_id, state=state, window_start=T0, window_end=T0,
            value=-4.0, threshold=-3.0, started_at=T0,
        )  # fmt: skip

    with session_scope(factory) as session:
        session.add_all([alert(AlertState.RESOLVED), alert(AlertState.RESOLVED)])  # history: fine
        session.add(alert(AlertState.FIRING))
    with pytest.raises(IntegrityError), session_scope(factory) as session:
        session.add(alert(AlertState.PENDING))


def test_default_rules_install_once(session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as session:
        assert len(ensure_default_rules(session)) == len(DEFAULT_RULES)
        assert ensure_default_rules(session) == []
        windows = set(session.scalars(select(AlertRule.window_s)))
    assert windows == {3600, 86400}


def test_evaluation_times_are_coalesced_per_minute() -> None:
    minutes = [T0 + dt.timedelta(seconds=s) for s in (0, 20, 50, 61, 200, 230)]
    assert _coalesced(minutes) == [minutes[2], minutes[3], minutes[5]]


def troubled_companies(session: Session, n: int) -> list[uuid.UUID]:
    """`n` companies with a calm week behind T0, then bad news at T0, at T0 + 3 h 10 min
    (inside the cooldown of the first alert) and at T0 + 5 h."""
    ids = []
    for i in range(n):
        entity = Entity(id=uuid.uuid4(), ticker=f"TRB{i}", name=f"Troubled {i}", aliases=[])
        session.add(entity)
        session.flush()
        calm = [(0.2 if k % 3 else -0.1, T0 - dt.timedelta(hours=8 * k + 2)) for k in range(1, 21)]
        add_articles(session, entity.id, calm)
        for start in (T0, T0 + 3 * HOUR + dt.timedelta(minutes=10), T0 + 5 * HOUR):
            burst(session, entity.id, start, 8)
        ids.append(entity.id)
    return ids


# Fired, still held, fired after holding 10 min, resolved, cooled down, fired again.
LIFECYCLE_TIMES = [T0 + dt.timedelta(minutes=minutes) for minutes in (35, 40, 50, 180, 230, 340)]


def lifecycle_rules(session: Session, override_for: uuid.UUID) -> None:
    rule(session)
    rule(session, name="share", kind=RuleKind.NEGATIVE_SHARE, threshold=0.6)
    rule(session, name="slow-share", kind=RuleKind.NEGATIVE_SHARE, threshold=0.6, for_s=600)
    rule(session, name="share", kind=RuleKind.NEGATIVE_SHARE, threshold=2.0,
         entity_id=override_for)  # fmt: skip


def alert_history(session: Session) -> list[tuple]:
    alerts = session.scalars(select(Alert).join(AlertRule))
    return sorted(
        (
            (str(a.entity_id), a.rule.name, a.started_at, a.state, a.fired_at, a.resolved_at,
             a.window_end, a.value, a.details)
            for a in alerts
        ),
        key=lambda row: row[:3],
    )  # fmt: skip


def test_a_batch_evaluates_as_each_entity_and_time_one_after_another(
    session_factory: sessionmaker[Session],
) -> None:
    with session_scope(session_factory) as session:
        entities = troubled_companies(session, 3)
        lifecycle_rules(session, override_for=entities[2])
    with session_factory() as session:
        batch = evaluate_entities(session, {e: LIFECYCLE_TIMES for e in entities})
        batch_history = alert_history(session)
        session.rollback()
    with session_factory() as session:
        one_by_one = [
            change
            for e in entities
            for at in LIFECYCLE_TIMES
            for change in evaluate(session, e, at)
        ]
        one_by_one_history = alert_history(session)
        session.rollback()
    states = [(c.entity_id, c.state) for c in batch]
    assert states == [(c.entity_id, c.state) for c in one_by_one]
    assert batch_history == one_by_one_history
    share = [row[3:6] for row in batch_history if row[0] == str(entities[0]) and row[1] == "share"]
    assert share == [
        (AlertState.RESOLVED, T0 + dt.timedelta(minutes=35), T0 + 3 * HOUR),  # 230: cooling
        (AlertState.FIRING, T0 + dt.timedelta(minutes=340), None),
    ]
    slow = [
        row[3:6] for row in batch_history if row[0] == str(entities[0]) and row[1] == "slow-share"
    ]
    assert slow[0][:2] == (AlertState.RESOLVED, T0 + dt.timedelta(minutes=50))
    assert not [row for row in batch_history if row[0] == str(entities[2]) and row[1] == "share"]


def test_evaluating_many_entities_sends_as_many_statements_as_one(
    database_url: str, session_factory: sessionmaker[Session]
) -> None:
    """Rules, windows and alerts are read once for a batch, not per entity or per time."""
    with session_scope(session_factory) as session:
        entities = troubled_companies(session, 12)
        lifecycle_rules(session, override_for=entities[0])

    def statements_for(ids: list[uuid.UUID]) -> tuple[int, list[AlertChange]]:
        with session_factory() as session:
            with statements_run(database_url) as sent:
                changes = evaluate_entities(session, {e: LIFECYCLE_TIMES for e in ids})
            session.rollback()
        return len(sent), changes

    one, one_changes = statements_for(entities[:1])
    twelve, twelve_changes = statements_for(entities)
    assert len(twelve_changes) > len(one_changes) > 0
    assert twelve == one <= 6  # rules, windows, alerts; then the flush's INSERT and UPDATE
