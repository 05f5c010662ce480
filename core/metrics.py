"""Prometheus metrics, named once here and shared by the API, the jobs and the ML engine.

Metric objects are module-level by prometheus-client's design (they register in its default
registry); they hold counters only and do no work at import.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

HTTP_REQUEST_DURATION = Histogram(
    "textsuite_http_request_duration_seconds",
    "HTTP request latency by route template and status.",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
JOB_DURATION = Histogram(
    "textsuite_job_duration_seconds",
    "Wall time of one job attempt by kind and outcome.",
    ["kind", "outcome"],
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600),
)
JOBS_SUBMITTED = Counter(
    "textsuite_jobs_submitted_total", "Jobs stored and dispatched, by kind.", ["kind"]
)
