"""Deliveries to a remote service outlast a long outage of it."""

from __future__ import annotations

import importlib

import pytest

from apps.sentiment.notify import NOTIFY_JOB
from apps.support.chatwoot import REPLY_JOB
from apps.support.helpdesk_webhook import CALLBACK_JOB
from workers.registry import get_definition

DAY_S = 24 * 3600.0


@pytest.mark.parametrize("kind", [REPLY_JOB, CALLBACK_JOB, NOTIFY_JOB])
def test_a_delivery_is_retried_for_about_a_day(kind: str) -> None:
    for tasks in ("workers.tasks.support_delivery", "workers.tasks.sentiment_notify"):
        importlib.import_module(tasks)  # registers the delivery kinds
    definition = get_definition(kind)
    waited = sum(definition.backoff(retry) for retry in range(definition.max_retries))
    # A helpdesk down over a lunch break or a night's deploy still gets its replies after.
    assert 0.99 * DAY_S <= waited <= 1.05 * DAY_S
    assert definition.backoff(definition.max_retries - 1) == 600.0  # every ten minutes by then
