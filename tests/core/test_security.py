from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.security import (
    KeyCache,
    RateLimiter,
    authenticate,
    create_api_key,
    ensure_api_key,
    hash_api_key,
    parse_scopes,
    revoke_api_key,
)
from core.storage.models import ApiKey, Scope


def test_only_the_hash_is_stored(db_session: Session) -> None:
    record, key = create_api_key(db_session, "helpdesk", ["support"])
    assert key.startswith("ts_") and len(key) > 40
    stored = db_session.scalars(select(ApiKey)).one()
    assert stored.key_hash == hash_api_key(key) != key
    assert key not in repr([getattr(stored, column.key) for column in ApiKey.__table__.columns])
    assert stored.prefix == key[:10]
    assert authenticate(db_session, key).id == record.id
    assert authenticate(db_session, key + "x") is None


def test_admin_grants_every_scope_and_others_only_their_own(db_session: Session) -> None:
    support, _ = create_api_key(db_session, "a", ["support"])
    admin, _ = create_api_key(db_session, "b", ["admin"])
    assert support.grants(Scope.SUPPORT) and not support.grants(Scope.RECOMMEND)
    assert all(admin.grants(scope) for scope in Scope)


def test_revoked_keys_stop_working(db_session: Session) -> None:
    record, key = create_api_key(db_session, "a", ["sentiment"])
    revoke_api_key(db_session, record.id)
    assert authenticate(db_session, key) is None


def test_bootstrap_key_is_stored_once(db_session: Session) -> None:
    key = "an-operator-chosen-key-of-some-length"
    first = ensure_api_key(db_session, key, "bootstrap", ["admin"])
    again = ensure_api_key(db_session, key, "bootstrap", ["admin"])
    assert first.id == again.id
    with pytest.raises(ValueError, match="too short"):
        ensure_api_key(db_session, "short", "bootstrap", ["admin"])


def test_scopes_are_validated() -> None:
    assert parse_scopes(["Support", "admin", "support"]) == ["admin", "support"]
    with pytest.raises(ValueError, match="expected one of support, sentiment, recommend, admin"):
        parse_scopes(["billing"])
    with pytest.raises(ValueError, match="at least one scope"):
        parse_scopes([])


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_key_cache_forgets_a_key_after_its_time(db_session: Session) -> None:
    record, key = create_api_key(db_session, "cached", ["support"])
    clock = FakeClock()
    cache = KeyCache(5.0, clock=clock)
    assert cache.get(key) is None
    cache.put(key, record)
    assert cache.get(key) is record
    assert cache.get(key + "x") is None
    clock.now += 4.9
    assert cache.get(key) is record
    clock.now += 0.2
    assert cache.get(key) is None


def test_key_cache_stays_bounded_and_can_be_turned_off(db_session: Session) -> None:
    records = [create_api_key(db_session, f"k{n}", ["support"]) for n in range(5)]
    clock = FakeClock()
    cache = KeyCache(5.0, max_keys=3, clock=clock)
    for record, key in records:
        cache.put(key, record)
        clock.now += 1.0
    assert len(cache._keys) <= 3
    assert cache.get(records[-1][1]) is records[-1][0]

    off = KeyCache(0)
    off.put(records[0][1], records[0][0])
    assert off.get(records[0][1]) is None


def test_rate_limiter_lets_a_burst_through_then_paces_the_key() -> None:
    import uuid

    clock = FakeClock()
    limiter = RateLimiter(burst_s=2.0, clock=clock)
    key, other = uuid.uuid4(), uuid.uuid4()
    assert [limiter.take(key, 5.0) for _ in range(10)] == [0.0] * 10  # 2 s worth of 5/s
    wait = limiter.take(key, 5.0)
    assert wait == pytest.approx(0.2)  # the next token comes in 1/5 s
    assert limiter.take(other, 5.0) == 0.0  # each key has its own bucket
    clock.now += 0.2
    assert limiter.take(key, 5.0) == 0.0
    assert limiter.take(key, 5.0) > 0
    assert limiter.take(key, 0) == 0.0  # 0: no limit


def test_a_key_can_carry_its_own_rate_limit(db_session: Session) -> None:
    record, _ = create_api_key(db_session, "partner", ["recommend"], rate_limit_per_s=2.5)
    assert record.rate_limit_per_s == 2.5
    assert create_api_key(db_session, "plain", ["recommend"])[0].rate_limit_per_s is None
    with pytest.raises(ValueError, match="0 or more"):
        create_api_key(db_session, "bad", ["recommend"], rate_limit_per_s=-1)


def test_rate_limiter_stays_bounded_however_many_keys_it_sees() -> None:
    import uuid

    clock = FakeClock()
    limiter = RateLimiter(max_keys=50, clock=clock)
    for _ in range(200):
        assert limiter.take(uuid.uuid4(), 5.0) == 0.0
        clock.now += 1.0  # each bucket idles past the minute that makes it forgettable
    assert len(limiter._buckets) <= 61
