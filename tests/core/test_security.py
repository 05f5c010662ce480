from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.security import (
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
