"""API keys: generated once, stored as SHA-256 hashes, checked per scope."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import uuid
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.storage.base import utcnow
from core.storage.models import ApiKey, Scope

KEY_PREFIX = "ts_"
MIN_KEY_LENGTH = 24
# Touch `last_used_at` at most this often, so authentication is not a write per request.
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


def hash_api_key(key: str) -> str:
    """SHA-256 is enough here: keys are 256-bit random, so there is nothing to brute-force."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def display_prefix(key: str) -> str:
    return key[:10]


def parse_scopes(values: Iterable[str]) -> list[str]:
    scopes: list[str] = []
    for value in values:
        try:
            scopes.append(Scope(value.strip().lower()).value)
        except ValueError:
            valid = ", ".join(scope.value for scope in Scope)
            raise ValueError(f"unknown scope {value!r}; expected one of {valid}") from None
    if not scopes:
        raise ValueError(f"give at least one scope: {', '.join(s.value for s in Scope)}")
    return sorted(set(scopes))


def create_api_key(session: Session, name: str, scopes: Iterable[str]) -> tuple[ApiKey, str]:
    """Store a new key and return it with its clear text, which is never stored or shown again."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    record = ApiKey(
        name=name,
        prefix=display_prefix(key),
        key_hash=hash_api_key(key),
        scopes=parse_scopes(scopes),
    )
    session.add(record)
    session.flush()
    return record, key


def ensure_api_key(session: Session, key: str, name: str, scopes: Iterable[str]) -> ApiKey:
    """Store `key` (hashed) if it is not stored yet: the bootstrap path for a configured key."""
    if len(key) < MIN_KEY_LENGTH:
        raise ValueError(f"API key too short ({len(key)} chars); use at least {MIN_KEY_LENGTH}")
    digest = hash_api_key(key)
    existing = session.scalars(select(ApiKey).where(ApiKey.key_hash == digest)).first()
    if existing is not None:
        return existing
    record = ApiKey(
        name=name, prefix=display_prefix(key), key_hash=digest, scopes=parse_scopes(scopes)
    )
    session.add(record)
    session.flush()
    return record


def authenticate(session: Session, key: str) -> ApiKey | None:
    """The live key record for `key`, or `None` when it is unknown or revoked."""
    record = session.scalars(select(ApiKey).where(ApiKey.key_hash == hash_api_key(key))).first()
    if record is None or record.revoked_at is not None:
        return None
    now = utcnow()
    if record.last_used_at is None or now - record.last_used_at > LAST_USED_RESOLUTION:
        record.last_used_at = now
        session.commit()
    return record


def revoke_api_key(session: Session, key_id: uuid.UUID) -> ApiKey | None:
    """Revoke a key by id; requests with it get 401 from now on."""
    record = session.get(ApiKey, key_id)
    if record is not None and record.revoked_at is None:
        record.revoked_at = utcnow()
        session.flush()
    return record
