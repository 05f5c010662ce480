"""A prefork worker's jobs run in its pool processes; their metrics still reach the worker's
`--metrics-port` (prometheus-client's multiprocess mode)."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import psutil

from core.jobs import submit_job
from core.settings import Settings
from core.storage.engine import get_session_factory
from core.storage.models import JobStatus
from tests.apps.support.fake_chatwoot import free_port
from tests.reliability.workers import Workers, wait_until_ready
from tests.workers.conftest import wait_for_job
from workers.dispatch import CeleryDispatcher


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def test_jobs_run_by_prefork_children_show_in_the_workers_metrics(
    kill_settings: Settings, workers: Workers, dispatcher: CeleryDispatcher, tmp_path: Path
) -> None:
    port = free_port()
    worker = workers.start("default", "prefork", "--metrics-port", str(port))
    wait_until_ready(dispatcher, worker)
    factory = get_session_factory(kill_settings.database_url)
    out = tmp_path / "line.txt"
    job, _ = submit_job(factory, dispatcher, "tests.append_line", {"path": str(out)})
    assert wait_for_job(factory, job.id).status is JobStatus.SUCCEEDED

    wanted = 'textsuite_job_duration_seconds_count{kind="tests.append_line",outcome="succeeded"}'
    deadline = time.monotonic() + 10
    while wanted not in (text := scrape(port)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert f"{wanted} 1.0" in text

    # A gauge set in a pool process is one series for the worker (its processes add up), not
    # one per process id that an autoscaler would have to sum itself.
    depth, _ = submit_job(
        factory, dispatcher, "tests.queue_depth", {"batcher": "probe", "depth": 3}
    )
    assert wait_for_job(factory, depth.id).status is JobStatus.SUCCEEDED
    text = scrape(port)
    series = [line for line in text.splitlines() if line.startswith("textsuite_batch_queue_depth{")]
    assert series == ['textsuite_batch_queue_depth{batcher="probe"} 3.0']

    folder = Path(psutil.Process(worker.pid).environ()["PROMETHEUS_MULTIPROC_DIR"])
    assert folder.is_dir()
    worker.terminate()  # a warm shutdown: the folder made for this worker goes with it
    worker.wait(timeout=30)
    assert not folder.exists()
