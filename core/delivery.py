"""Sending to a remote service (a helpdesk, an alert webhook): one POST, and a verdict.

Network errors, 5xx and 429 are `DeliveryUnavailable` (the target is down or busy: retry);
any other 4xx is `DeliveryRejected` (the request itself is wrong: retrying cannot help).
Messages name the target and the URL path, never headers, tokens or query strings.
"""

from __future__ import annotations

import httpx

RESPONSE_SNIPPET_CHARS = 300
# Delivery jobs retry with exponential backoff: 0.5 s doubling, capped at ten minutes (reached
# after 17 minutes); 154 retries cover about a day of outage: a helpdesk down for hours still
# gets its replies and handoffs once it is back. After that the job fails with the last reason.
RETRIES = 154
RETRY_BACKOFF_S = 0.5


class DeliveryUnavailable(RuntimeError):
    """The helpdesk could not take the request now; the same request may succeed later."""


class DeliveryRejected(RuntimeError):
    """The helpdesk refused the request; sending it again will not help."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


def redact_url(url: str | httpx.URL, *, whole_path: bool = False) -> str:
    """A URL fit for logs and error messages: scheme, host, port and the path's first segment
    (`whole_path`: all of it, for a path this project builds itself, such as Chatwoot's API).

    User info and query strings may carry credentials, and so may the rest of a path a user
    gave: a Slack incoming webhook's is its token (`/services/T…/B…/<secret>`), as is a
    Discord webhook's.
    """
    parsed = httpx.URL(str(url))
    host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host  # IPv6
    port = f":{parsed.port}" if parsed.port else ""
    first, _, rest = parsed.path.lstrip("/").partition("/")
    path = parsed.path if whole_path or not rest else f"/{first}/…"
    return f"{parsed.scheme}://{host}{port}{path}"


def post_json(
    client: httpx.Client,
    url: str,
    body: bytes,
    *,
    target: str,
    headers: dict[str, str] | None = None,
    whole_path: bool = False,
) -> httpx.Response:
    """POST `body` (JSON bytes, sent exactly as given) and return the 2xx response. Errors
    name the URL as `redact_url(url, whole_path=whole_path)` writes it."""
    where = redact_url(url, whole_path=whole_path)
    try:
        response = client.post(
            url, content=body, headers={"Content-Type": "application/json", **(headers or {})}
        )
    except httpx.TransportError as exc:
        raise DeliveryUnavailable(
            f"cannot reach {target} at POST {where}: {type(exc).__name__}: {exc}"
        ) from None
    if response.is_success:
        return response
    snippet = response.text[:RESPONSE_SNIPPET_CHARS].strip()
    message = f"{target} answered {response.status_code} to POST {where}: {snippet or '(empty)'}"
    if response.status_code == 429 or response.status_code >= 500:
        raise DeliveryUnavailable(message)
    if response.status_code in (401, 403):
        message += " (check the configured token or secret)"
    raise DeliveryRejected(message, response.status_code)
