"""HMAC signatures over "{timestamp}.{body}": the one scheme every webhook and callback uses."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from core.signing import SignatureError, sign, signature_headers, verify

SECRET = "s3cret-signing-key"
BODY = b'{"text": "where is my order?"}'
NOW = 1_750_000_000


def test_sign_is_hmac_sha256_of_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, NOW, BODY) == f"sha256={expected}"
    assert sign(SECRET, str(NOW), BODY) == sign(SECRET.encode(), NOW, BODY)


def test_a_fresh_signature_verifies() -> None:
    verify(SECRET, str(NOW), BODY, sign(SECRET, NOW, BODY), tolerance_s=300, now=NOW + 299)
    verify(SECRET, NOW, BODY, sign(SECRET, NOW, BODY), tolerance_s=300, now=NOW - 300)


def test_signature_headers_verify() -> None:
    headers = signature_headers(SECRET, BODY, prefix="X-Chatwoot", now=NOW)
    assert headers["X-Chatwoot-Timestamp"] == str(NOW)
    verify(SECRET, headers["X-Chatwoot-Timestamp"], BODY, headers["X-Chatwoot-Signature"], 5, NOW)


@pytest.mark.parametrize(
    ("timestamp", "body", "signature", "message"),
    [
        (None, BODY, sign(SECRET, NOW, BODY), "missing timestamp"),
        ("  ", BODY, sign(SECRET, NOW, BODY), "missing timestamp"),
        (NOW, BODY, None, "missing signature"),
        (NOW, BODY, "", "missing signature"),
        ("12:00", BODY, sign(SECRET, NOW, BODY), "not unix seconds"),
        ("\uff11\uff12\uff13", BODY, sign(SECRET, NOW, BODY), "not unix seconds"),
        ("9" * 400, BODY, sign(SECRET, NOW, BODY), "not unix seconds"),  # overflowed a float
        (NOW - 301, BODY, sign(SECRET, NOW - 301, BODY), "301 s old"),
        (NOW + 400, BODY, sign(SECRET, NOW + 400, BODY), "400 s in the future"),
        (NOW, BODY + b" ", sign(SECRET, NOW, BODY), "does not match"),
        (NOW, BODY, sign("other-secret", NOW, BODY), "does not match"),
        (NOW + 1, BODY, sign(SECRET, NOW, BODY), "does not match"),
        (NOW, BODY, sign(SECRET, NOW, BODY).replace("sha256=", ""), "must look like"),
        (NOW, BODY, "sha1=" + "0" * 40, "must look like"),
        (NOW, BODY, "sha256=ünïcode", "does not match"),
    ],
    ids=[
        "no-ts",
        "blank-ts",
        "no-sig",
        "blank-sig",
        "ts-not-int",
        "ts-not-ascii",
        "ts-400-digits",
        "stale",
        "future",
        "body-changed",
        "wrong-secret",
        "ts-changed",
        "no-scheme",
        "other-scheme",
        "non-ascii-sig",
    ],
)
def test_what_is_wrong_is_said(timestamp, body, signature, message) -> None:
    with pytest.raises(SignatureError, match=message) as caught:
        verify(SECRET, timestamp, body, signature, tolerance_s=300, now=NOW)
    text = str(caught.value)
    assert SECRET not in text
    if signature and "=" in signature:
        assert signature.partition("=")[2] not in text
