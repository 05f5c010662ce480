"""Alert notifications are jobs, for the changes that are news; an alert that changed while the
broker was away is still announced once the broker is back."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

import workers.tasks.sentiment_notify  # noqa: F401  (registers the job kind)
from apps.sentiment.alerts import AlertChange
from apps.sentiment.models import AlertState, WebhookTarget
from apps.sentiment.notify import NOTIFY_JOB, notify_changes
from core.jobs import JobKindSpec, redispatch_stalled
from core.storage.engine import session_scope
from core.storage.models import Job, JobStatus
from workers.registry import get_definition


class Broker:
    """The broker boundary: refuses every message while `down`, records them otherwise."""

    def __init__(self) -> None:
        self.down = True
        self.sent: list[uuid.UUID] = []

    def spec_for(self, kind: str) -> JobKindSpec:
        return get_definition(kind).spec

    def dispatch(self, job_id: uuid.UUID, kind: str, queue: str) -> None:
        if self.down:
            raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        self.sent.append(job_id)


def test_an_alert_that_fired_while_the_broker_was_away_is_announced_later(
    session_factory: sessionmaker[Session],
) -> None:
    with session_scope(session_factory) as session:
        session.add(WebhookTarget(url="http://127.0.0.1:9/hooks"))
    broker = Broker()
    change = AlertChange(uuid.uuid4(), uuid.uuid4(), AlertState.FIRING)

    assert notify_changes(session_factory, broker, [change]) == 1  # no error for the ingest

    with session_factory() as session:
        (job,) = session.scalars(select(Job).where(Job.kind == NOTIFY_JOB))
    assert job.status is JobStatus.QUEUED
    broker.down = False
    assert redispatch_stalled(session_factory, broker, waiting_s=0, lease_s=60) == [job.id]
    assert broker.sent == [job.id]


def test_only_news_is_announced(session_factory: sessionmaker[Session]) -> None:
    """Firing, and resolved after firing; a pending alert that resolved unfired is not news."""
    with session_scope(session_factory) as session:
        session.add(WebhookTarget(url="http://127.0.0.1:9/hooks"))
    broker = Broker()
    broker.down = False
    alert = uuid.uuid4()
    changes = [
        AlertChange(alert, uuid.uuid4(), AlertState.PENDING),
        AlertChange(uuid.uuid4(), uuid.uuid4(), AlertState.RESOLVED, announced=False),
        AlertChange(alert, uuid.uuid4(), AlertState.FIRING),
        AlertChange(alert, uuid.uuid4(), AlertState.RESOLVED),
    ]
    assert notify_changes(session_factory, broker, changes) == 2
    with session_factory() as session:
        states = sorted(job.params["state"] for job in session.scalars(select(Job)))
    assert states == ["firing", "resolved"]
