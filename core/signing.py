"""HMAC-SHA256 signatures over `"{timestamp}.{body}"`, for webhooks in and callbacks out.

One scheme for every integration: the sender puts unix seconds in a timestamp header and
`sha256=<hex of HMAC-SHA256(secret, f"{timestamp}.{raw body}")>` in a signature header. The
receiver recomputes it, compares in constant time, and rejects timestamps further than a
tolerance from now, so a captured request cannot be replayed later.

Error messages never contain the secret or the signature value: they are safe to log.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SCHEME = "sha256"


class SignatureError(ValueError):
    """A request's signature is missing, malformed, wrong or too old (the message says which)."""


def _key(secret: str | bytes) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def sign(secret: str | bytes, timestamp: int | str, body: bytes) -> str:
    """The signature header value for `body` sent at `timestamp`: `sha256=<hex>`."""
    message = str(timestamp).encode("ascii") + b"." + body
    return f"{SCHEME}={hmac.new(_key(secret), message, hashlib.sha256).hexdigest()}"


def signature_headers(
    secret: str | bytes, body: bytes, *, prefix: str = "X-Textsuite", now: float | None = None
) -> dict[str, str]:
    """`{prefix}-Timestamp` and `{prefix}-Signature` headers for sending `body` now."""
    timestamp = int(time.time() if now is None else now)
    return {
        f"{prefix}-Timestamp": str(timestamp),
        f"{prefix}-Signature": sign(secret, timestamp, body),
    }


def verify(
    secret: str | bytes,
    timestamp: str | int | None,
    body: bytes,
    signature: str | None,
    tolerance_s: float,
    now: float | None = None,
) -> None:
    """Check a received signature; raise `SignatureError` saying what is wrong.

    `timestamp` and `signature` are the raw header values (`None` when absent).
    """
    if timestamp is None or str(timestamp).strip() == "":
        raise SignatureError("missing timestamp header (unix seconds)")
    if signature is None or signature.strip() == "":
        raise SignatureError(f"missing signature header ('{SCHEME}=<hex HMAC-SHA256>')")
    text = str(timestamp).strip()
    # Unix seconds have 10 digits until the year 2286: more is not a time.
    if not text.isascii() or not text.lstrip("-").isdigit() or len(text) > 12:
        raise SignatureError(f"timestamp {text[:20]!r} is not unix seconds")
    sent_at = int(text)
    current = time.time() if now is None else now
    skew = current - sent_at
    if abs(skew) > tolerance_s:
        direction = "old" if skew > 0 else "in the future"
        raise SignatureError(
            f"timestamp {sent_at} is {abs(skew):.0f} s {direction}; requests are accepted within "
            f"{tolerance_s:g} s of the receiver's clock (check the sender's clock, or a replay)"
        )
    scheme, _, _digest = signature.strip().partition("=")
    if scheme != SCHEME:
        raise SignatureError(f"signature must look like '{SCHEME}=<hex HMAC-SHA256>'")
    expected = sign(secret, text, body)
    # Bytes on both sides: compare_digest refuses non-ASCII str, and a header may contain any.
    if not hmac.compare_digest(expected.encode(), signature.strip().encode("utf-8", "replace")):
        raise SignatureError(
            "signature does not match the body: check the shared secret, and sign "
            "f'{timestamp}.{raw body}' exactly as sent"
        )
