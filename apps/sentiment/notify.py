"""Alert notifications: Slack-compatible JSON to each webhook target, retried as jobs.

A target receives `{"text": ..., "blocks": [...]}` (what Slack's incoming webhooks take, and
what Mattermost, Rocket.Chat and most chat tools accept), plus the alert as structured data
under `"alert"`. When the target has a secret, the body is signed (`X-Textsuite-Timestamp`,
`X-Textsuite-Signature: sha256=...`, as the support webhooks are).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from apps.sentiment.alerts import AlertChange
from apps.sentiment.models import Alert, AlertState, WebhookTarget
from core.delivery import post_json
from core.jobs import JobDispatcher, submit_job
from core.signing import signature_headers

NOTIFY_JOB = "sentiment.notify"
NOTIFIED_STATES = (AlertState.FIRING, AlertState.RESOLVED)


class NotifyParams(BaseModel):
    """Parameters of a `sentiment.notify` job."""

    model_config = ConfigDict(extra="forbid")

    alert_id: uuid.UUID
    target_id: uuid.UUID
    state: AlertState


def notify_changes(
    factory: sessionmaker[Session], dispatcher: JobDispatcher, changes: Sequence[AlertChange]
) -> int:
    """Submit one delivery job per (fired or resolved alert, enabled target); returns how many.

    Idempotent: the same alert, state and target never make a second job.
    """
    wanted = [c for c in changes if c.state in NOTIFIED_STATES and c.announced]
    if not wanted:
        return 0
    with factory() as session:
        targets = list(session.scalars(select(WebhookTarget.id).where(WebhookTarget.enabled)))
    submitted = 0
    for change in wanted:
        for target_id in targets:
            params = NotifyParams(alert_id=change.alert_id, target_id=target_id, state=change.state)
            _job, created = submit_job(
                factory,
                dispatcher,
                NOTIFY_JOB,
                params.model_dump(mode="json"),
                idempotency_key=f"{change.alert_id}:{change.state.value}:{target_id}",
                dispatch_later_if_down=True,  # the alert changed already: never lose its news
            )
            submitted += created
    return submitted


def slack_message(alert: Alert, state: AlertState) -> dict[str, Any]:
    """The notification that `alert` went into `state` (it may have moved on since)."""
    entity, rule = alert.entity, alert.rule
    details = alert.details or {}
    mean = details.get("mean_score")
    facts = [
        f"*{details.get('volume', 0)}* articles in the last {_duration(rule.window_s)}",
        f"mean score {mean:+.2f}" if mean is not None else None,
        f"negative share {details['negative_share']:.0%}"
        if details.get("negative_share") is not None
        else None,
        f"{rule.kind.value} {alert.value:.2f} (threshold {alert.threshold:g})",
    ]
    summary = ", ".join(fact for fact in facts if fact)
    who = f"{_escaped(entity.name)} ({_escaped(entity.ticker)}), rule {_escaped(rule.name)}"
    text = f"Resolved: {who}" if state is AlertState.RESOLVED else f"Alert: {who}: {summary}"
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{text}*"}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": summary}]},
        ],
        "alert": {
            "id": str(alert.id),
            "state": state.value,
            "ticker": entity.ticker,
            "entity": entity.name,
            "rule": rule.name,
            "kind": rule.kind.value,
            "value": alert.value,
            "threshold": alert.threshold,
            "window_start": alert.window_start.isoformat(),
            "window_end": alert.window_end.isoformat(),
            "fired_at": alert.fired_at.isoformat() if alert.fired_at else None,
            "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
            "details": details,
        },
    }


def deliver(
    session: Session,
    params: NotifyParams,
    *,
    delivery_id: str,
    transport: httpx.BaseTransport | None = None,
    timeout_s: float = 10.0,
) -> int | None:
    """POST the notification; returns the status code, or None where it would only mislead
    now: that an alert fired, once it has resolved (its own notification says so; a firing
    one that got through after it would leave the receiver believing it still fires).
    Raises `core.delivery` errors."""
    alert = session.get(Alert, params.alert_id)
    target = session.get(WebhookTarget, params.target_id)
    if alert is None or target is None:
        raise LookupError(f"alert {params.alert_id} or target {params.target_id} no longer exists")
    if params.state is AlertState.FIRING and alert.state is AlertState.RESOLVED:
        return None
    body = json.dumps(slack_message(alert, params.state)).encode("utf-8")
    headers = {"X-Textsuite-Delivery": delivery_id}
    if target.secret:
        headers.update(signature_headers(target.secret, body))
    with httpx.Client(timeout=timeout_s, transport=transport) as client:
        response = post_json(client, target.url, body, target="the alert webhook", headers=headers)
    return response.status_code


def _duration(seconds: int) -> str:
    if seconds % 86400 == 0:
        return f"{seconds // 86400} d" if seconds != 86400 else "24 h"
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def _escaped(text: str) -> str:
    """`text` as Slack's mrkdwn shows it literally: `<!channel>` in a company's name must not
    notify a whole channel, nor `<url|label>` make a link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
