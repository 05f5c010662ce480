"""API keys: generated once, stored as SHA-256 hashes, checked per scope."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable

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


def create_api_key(
    session: Session, name: str, scopes: Iterable[str], rate_limit_per_s: float | None = None
) -> tuple[ApiKey, str]:
    """Store a new key and return it with its clear text, which is never stored or shown again.
    `rate_limit_per_s`: this key's own request rate (None: `TEXTSUITE_RATE_LIMIT_PER_S`)."""
    if rate_limit_per_s is not None and rate_limit_per_s < 0:
        raise ValueError(f"a rate limit is requests per second, 0 or more; got {rate_limit_per_s}")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    record = ApiKey(
        name=name,
        prefix=display_prefix(key),
        key_hash=hash_api_key(key),
        scopes=parse_scopes(scopes),
        rate_limit_per_s=rate_limit_per_s,
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


def session_token(record: ApiKey, ttl_s: float, *, now: float | None = None) -> str:
    """A browser session for `record`'s holder (the dashboard's cookie), so the browser never
    keeps the key itself: `<key id>.<expiry>.<HMAC of both under the key's stored hash>`.
    Only the server can make one (it alone holds the hash); it ends at its expiry, and with
    the key when the key is revoked."""
    expires = int((time.time() if now is None else now) + ttl_s)
    body = f"{record.id}.{expires}"
    return f"{body}.{_session_signature(record.key_hash, body)}"


def session_key(session: Session, token: str, *, now: float | None = None) -> ApiKey | None:
    """The live key a `session_token` was made for, or None (malformed, forged, expired,
    or its key revoked)."""
    key_id, _, rest = token.partition(".")
    expires, _, signature = rest.partition(".")
    try:
        record = session.get(ApiKey, uuid.UUID(key_id))
        ends = int(expires)
    except ValueError:
        return None
    if record is None or record.revoked_at is not None:
        return None
    if ends <= (time.time() if now is None else now):
        return None
    expected = _session_signature(record.key_hash, f"{key_id}.{expires}")
    return record if hmac.compare_digest(expected, signature) else None


def _session_signature(key_hash: str, body: str) -> str:
    return hmac.new(key_hash.encode(), body.encode(), hashlib.sha256).hexdigest()


def revoke_api_key(session: Session, key_id: uuid.UUID) -> ApiKey | None:
    """Revoke a key by id; requests with it get 401 from now on. A key revoked before keeps
    its `revoked_at`."""
    record = session.get(ApiKey, key_id)
    if record is not None and record.revoked_at is None:
        record.revoked_at = utcnow()
        session.flush()
    return record


class KeyCache:
    """Keys this process has authenticated, trusted for `ttl_s` seconds: a request with a
    known key needs no database round trip. A revoked key keeps working in a process for at
    most `ttl_s`; `ttl_s=0` checks every request. Unknown keys are never cached."""

    def __init__(
        self, ttl_s: float, *, max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s, self.max_keys, self._clock = ttl_s, max_keys, clock
        self._keys: dict[str, tuple[float, ApiKey]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> ApiKey | None:
        if self.ttl_s <= 0:
            return None
        found = self._keys.get(hash_api_key(key))
        if found is None or found[0] <= self._clock():
            return None
        return found[1]

    def put(self, key: str, record: ApiKey) -> None:
        if self.ttl_s <= 0:
            return
        now = self._clock()
        with self._lock:
            if len(self._keys) >= self.max_keys:
                self._keys = {h: e for h, e in self._keys.items() if e[0] > now}
                if len(self._keys) >= self.max_keys:
                    self._keys.clear()
            self._keys[hash_api_key(key)] = (now + self.ttl_s, record)

    def clear(self) -> None:
        with self._lock:
            self._keys.clear()


class RateLimiter:
    """A token bucket per API key, in this process: `rate` requests a second on average, and
    bursts of up to `burst_s` seconds' worth. With several API processes each one counts its
    own requests, so a key's total is up to the number of processes times its rate."""

    def __init__(
        self,
        *,
        burst_s: float = 2.0,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst_s, self.max_keys, self._clock = burst_s, max_keys, clock
        self._buckets: dict[uuid.UUID, tuple[float, float]] = {}  # key id -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, key_id: uuid.UUID, rate: float) -> float:
        """0 when the request may go ahead (it used a token); otherwise the seconds until the
        key has a token again. `rate` 0 means no limit."""
        if rate <= 0:
            return 0.0
        capacity = max(1.0, rate * self.burst_s)
        now = self._clock()
        with self._lock:
            if key_id not in self._buckets and len(self._buckets) >= self.max_keys:
                self._forget_idle(now)
            tokens, at = self._buckets.get(key_id, (capacity, now))
            tokens = min(capacity, tokens + (now - at) * rate)
            allowed = tokens >= 1.0
            self._buckets[key_id] = (tokens - 1.0 if allowed else tokens, now)
            return 0.0 if allowed else (1.0 - tokens) / rate

    def _forget_idle(self, now: float) -> None:
        # A bucket idle for a minute is full again, the same as a missing one.
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < 60.0}
