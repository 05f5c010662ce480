"""Job records: submission with idempotency keys, atomic claims, leases, outcomes."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from pydantic import BaseModel, Field
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from core import jobs
from core.storage.models import Job, JobStatus


class TrainParams(BaseModel):
    epochs: int = Field(ge=1)


class RecordingDispatcher:
    """Stands in for the broker boundary: records what would be sent."""

    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[uuid.UUID, str, str]] = []
        self.fail = fail

    def spec_for(self, kind: str) -> jobs.JobKindSpec:
        if kind not in {"core.worker_info", "support.train"}:
            raise jobs.UnknownJobKind(kind, ["core.worker_info", "support.train"])
        if kind == "support.train":
            return jobs.JobKindSpec("gpu", TrainParams)
        return jobs.JobKindSpec("default")

    def dispatch(self, job_id: uuid.UUID, kind: str, queue: str) -> None:
        if self.fail:
            raise ConnectionError("Error 111 connecting to 127.0.0.1:6390")
        self.sent.append((job_id, kind, queue))


def test_submit_stores_and_dispatches_to_the_kinds_queue(
    session_factory: sessionmaker[Session],
) -> None:
    dispatcher = RecordingDispatcher()
    job, created = jobs.submit_job(session_factory, dispatcher, "support.train", {"epochs": 2})
    assert created
    assert dispatcher.sent == [(job.id, "support.train", "gpu")]
    with session_factory() as session:
        stored = session.get(Job, job.id)
        assert (stored.status, stored.queue, stored.params) == (
            JobStatus.QUEUED,
            "gpu",
            {"epochs": 2},
        )


def test_same_idempotency_key_returns_the_first_job(session_factory: sessionmaker[Session]) -> None:
    dispatcher = RecordingDispatcher()
    first, created_first = jobs.submit_job(
        session_factory, dispatcher, "core.worker_info", {"a": 1}, idempotency_key="abc"
    )
    again, created_again = jobs.submit_job(
        session_factory, dispatcher, "core.worker_info", {"a": 1}, idempotency_key="abc"
    )
    assert (created_first, created_again) == (True, False)
    assert again.id == first.id
    assert len(dispatcher.sent) == 1
    with pytest.raises(jobs.IdempotencyConflict, match="other parameters"):
        jobs.submit_job(
            session_factory, dispatcher, "core.worker_info", {"a": 2}, idempotency_key="abc"
        )


def test_unknown_kind_lists_the_known_ones(session_factory: sessionmaker[Session]) -> None:
    expected = r"known kinds: core\.worker_info, support\.train"
    with pytest.raises(jobs.UnknownJobKind, match=expected):
        jobs.submit_job(session_factory, RecordingDispatcher(), "support.trian")


def test_broker_down_records_the_job_as_failed(session_factory: sessionmaker[Session]) -> None:
    with pytest.raises(jobs.DispatchError, match="could not enqueue"):
        jobs.submit_job(session_factory, RecordingDispatcher(fail=True), "core.worker_info")
    with session_factory() as session:
        (job,) = jobs.list_jobs(session)
        assert jobs.list_jobs(session, offset=1) == []
    assert job.status is JobStatus.FAILED
    assert "Error 111" in job.error


def test_a_retry_under_the_same_key_sends_the_job_the_broker_refused(
    session_factory: sessionmaker[Session],
) -> None:
    with pytest.raises(jobs.DispatchError):
        jobs.submit_job(
            session_factory, RecordingDispatcher(fail=True), "core.worker_info", idempotency_key="k"
        )
    back = RecordingDispatcher()
    job, created = jobs.submit_job(session_factory, back, "core.worker_info", idempotency_key="k")
    assert created and back.sent == [(job.id, "core.worker_info", "default")]
    with session_factory() as session:
        stored = session.get(Job, job.id)
        assert (stored.status, stored.error) == (JobStatus.QUEUED, None)
    again, created_again = jobs.submit_job(
        session_factory, back, "core.worker_info", idempotency_key="k"
    )
    assert (again.id, created_again, len(back.sent)) == (job.id, False, 1)  # sent once


def test_a_job_that_may_wait_stays_queued_until_the_broker_is_back(
    session_factory: sessionmaker[Session],
) -> None:
    down = RecordingDispatcher(fail=True)
    job, created = jobs.submit_job(
        session_factory, down, "core.worker_info", dispatch_later_if_down=True
    )
    assert created
    with session_factory() as session:
        assert session.get(Job, job.id).status is JobStatus.QUEUED

    back = RecordingDispatcher()
    sent = jobs.redispatch_stalled(session_factory, back, waiting_s=0, lease_s=60)
    assert sent == [job.id]
    assert back.sent == [(job.id, "core.worker_info", "default")]


def _queued(factory: sessionmaker[Session]) -> uuid.UUID:
    job, _ = jobs.submit_job(factory, RecordingDispatcher(), "core.worker_info")
    return job.id


def test_a_job_is_claimed_once(session_factory: sessionmaker[Session]) -> None:
    job_id = _queued(session_factory)
    first = jobs.claim_job(session_factory, job_id, "w1", lease_s=60)
    assert first is not None
    assert (first.status, first.attempts, first.worker) == (JobStatus.RUNNING, 1, "w1")
    assert jobs.claim_job(session_factory, job_id, "w2", lease_s=60) is None


def test_a_dead_workers_job_is_taken_over_after_its_lease(
    session_factory: sessionmaker[Session],
) -> None:
    job_id = _queued(session_factory)
    jobs.claim_job(session_factory, job_id, "w1", lease_s=60)
    with session_factory() as session:
        long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        session.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=long_ago))
        session.commit()
    taken = jobs.claim_job(session_factory, job_id, "w2", lease_s=60)
    assert taken is not None
    assert (taken.worker, taken.attempts) == ("w2", 2)


def test_a_finished_job_is_never_claimed_again(session_factory: sessionmaker[Session]) -> None:
    job_id = _queued(session_factory)
    jobs.claim_job(session_factory, job_id, "w1", lease_s=60)
    jobs.report_progress(session_factory, job_id, 1.7, "almost")
    with session_factory() as session:
        assert session.get(Job, job_id).progress == 1.0
    jobs.finish_job(session_factory, job_id, {"answer": 42})
    assert jobs.claim_job(session_factory, job_id, "w2", lease_s=0) is None
    with session_factory() as session:
        job = session.get(Job, job_id)
        assert (job.status, job.result, job.progress) == (JobStatus.SUCCEEDED, {"answer": 42}, 1.0)
        assert job.finished_at is not None


def test_parameters_are_validated_before_anything_is_stored(
    session_factory: sessionmaker[Session],
) -> None:
    dispatcher = RecordingDispatcher()
    with pytest.raises(jobs.InvalidJobParams, match="epochs: Input should be greater than"):
        jobs.submit_job(session_factory, dispatcher, "support.train", {"epochs": 0})
    with session_factory() as session:
        assert jobs.list_jobs(session) == []
    assert dispatcher.sent == []


def test_stalled_jobs_are_sent_again_once_per_wait(session_factory: sessionmaker[Session]) -> None:
    """Jobs whose message a broker restart lost (queued, retrying) or whose worker died with
    it (running, no heartbeat) are sent again; live, recent and finished ones are not."""
    dispatcher = RecordingDispatcher()
    made = {
        name: jobs.submit_job(session_factory, dispatcher, "core.worker_info", {"n": name})[0].id
        for name in ("lost", "retrying", "dead", "alive", "done", "recent")
    }
    long_ago = jobs.utcnow() - dt.timedelta(hours=1)
    changes = {
        "lost": {"updated_at": long_ago},
        "retrying": {"status": JobStatus.RETRYING, "updated_at": long_ago},
        "dead": {"status": JobStatus.RUNNING, "heartbeat_at": long_ago, "updated_at": long_ago},
        "alive": {
            "status": JobStatus.RUNNING,
            "heartbeat_at": jobs.utcnow(),
            "updated_at": long_ago,
        },
        "done": {"status": JobStatus.SUCCEEDED, "updated_at": long_ago},
    }
    with session_factory() as session:
        for name, values in changes.items():
            session.execute(update(Job).where(Job.id == made[name]).values(**values))
        session.commit()
    dispatcher.sent.clear()

    sent = jobs.redispatch_stalled(session_factory, dispatcher, waiting_s=600, lease_s=120)
    assert sorted(sent) == sorted(made[name] for name in ("lost", "retrying", "dead"))
    assert {job_id for job_id, *_ in dispatcher.sent} == set(sent)
    assert jobs.redispatch_stalled(session_factory, dispatcher, waiting_s=600, lease_s=120) == []
    # Sent twice, run once: the atomic claim lets one delivery through.
    assert jobs.claim_job(session_factory, made["lost"], "w1", lease_s=120) is not None
    assert jobs.claim_job(session_factory, made["lost"], "w2", lease_s=120) is None


def test_a_waiting_job_is_cancelled_at_once_and_never_runs(
    session_factory: sessionmaker[Session],
) -> None:
    job_id = _queued(session_factory)
    cancelled = jobs.cancel_job(session_factory, job_id)
    assert cancelled is not None
    assert (cancelled.status, cancelled.error) == (JobStatus.CANCELLED, jobs.CANCELLED)
    assert cancelled.finished_at is not None
    assert jobs.claim_job(session_factory, job_id, "w1", lease_s=60) is None
    with pytest.raises(jobs.JobFinished, match="already finished: cancelled"):
        jobs.cancel_job(session_factory, job_id)
    assert jobs.cancel_job(session_factory, uuid.uuid4()) is None


def test_a_running_job_stops_at_its_next_progress_report(
    session_factory: sessionmaker[Session],
) -> None:
    job_id = _queued(session_factory)
    jobs.claim_job(session_factory, job_id, "w1", lease_s=60)
    jobs.report_progress(session_factory, job_id, 0.2, "step 1")
    asked = jobs.cancel_job(session_factory, job_id)
    assert asked.status is JobStatus.RUNNING and asked.cancel_requested_at is not None
    assert jobs.cancel_job(session_factory, job_id).status is JobStatus.RUNNING  # asked twice
    with pytest.raises(jobs.JobCancelled):
        jobs.report_progress(session_factory, job_id, 0.4, "step 2")
    with session_factory() as session:
        assert session.get(Job, job_id).progress == 0.2


def test_a_finished_job_cannot_be_cancelled(session_factory: sessionmaker[Session]) -> None:
    job_id = _queued(session_factory)
    jobs.claim_job(session_factory, job_id, "w1", lease_s=60)
    jobs.finish_job(session_factory, job_id, {"answer": 42})
    with pytest.raises(jobs.JobFinished, match="already finished: succeeded"):
        jobs.cancel_job(session_factory, job_id)
    with session_factory() as session:
        assert session.get(Job, job_id).status is JobStatus.SUCCEEDED


def test_a_dead_workers_job_asked_to_stop_is_not_run_again(
    session_factory: sessionmaker[Session],
) -> None:
    job_id = _queued(session_factory)
    jobs.claim_job(session_factory, job_id, "w1", lease_s=60)
    jobs.cancel_job(session_factory, job_id)
    with session_factory() as session:
        long_ago = jobs.utcnow() - dt.timedelta(minutes=5)
        session.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=long_ago))
        session.commit()
    assert jobs.claim_job(session_factory, job_id, "w2", lease_s=60) is None
    with session_factory() as session:
        job = session.get(Job, job_id)
        assert (job.status, job.worker) == (JobStatus.CANCELLED, "w1")
