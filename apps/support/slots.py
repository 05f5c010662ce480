"""Slot values for answer templates: from the message, the conversation and the customer."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# Order references look like "TH-104233", "#104233" after the word order, or "order 104233".
_ORDER_ID = re.compile(
    r"\b([A-Z]{2,4}-\d{4,10})\b"
    r"|\border\s*(?:number|no\.?|nr\.?|id)?\s*(?:is\s+|was\s+)?[:#]?\s*#?"
    r"([A-Z0-9-]*\d[A-Z0-9-]{3,19})\b",
    re.IGNORECASE,
)


def slots_from_text(text: str) -> dict[str, str]:
    """Values a customer typed that templates can use (e.g. an order number)."""
    found: dict[str, str] = {}
    match = _ORDER_ID.search(text)
    if match:
        found["order_id"] = (match.group(1) or match.group(2)).upper()
    return found


def slot_values(
    *,
    message: Mapping[str, Any],
    conversation: Mapping[str, Any],
    customer_name: str | None,
    customer_attributes: Mapping[str, Any],
    metadata: Mapping[str, Any],
) -> dict[str, Any]:
    """Merge sources, most specific first: what the message says (the customer typed it), what
    the caller sent with the message (the helpdesk's context: the latest order), what the
    conversation said before, then the customer's record."""
    values: dict[str, Any] = {}
    if customer_attributes.get("last_order_id"):
        values["order_id"] = customer_attributes["last_order_id"]
    values.update({k: v for k, v in customer_attributes.items() if v not in (None, "")})
    if customer_name and customer_name.split():
        values["customer_name"] = customer_name.split()[0]
    values.update(conversation)
    values.update({k: v for k, v in metadata.items() if v not in (None, "")})
    values.update(message)
    return values
