"""Prometheus metrics, named once here and shared by the API, the jobs and the ML engine.

Metric objects are module-level by prometheus-client's design (they register in its default
registry); they hold counters only and do no work at import.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
MODEL_LOAD_SECONDS = Histogram(
    "textsuite_model_load_seconds",
    "Time to load a model into a predictor, by kind.",
    ["kind"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
PERIODIC_RUNS = Counter(
    "textsuite_periodic_runs_total",
    "Rounds of periodic work (alert sweep, feed polling, job redispatch, retraining checks), by "
    "work and outcome: ok or failed.",
    ["work", "outcome"],
)
PERIODIC_LAST_SUCCESS = Gauge(
    "textsuite_periodic_last_success_timestamp_seconds",
    "When a round of the work last succeeded in this process (alert when it grows old).",
    ["work"],
    multiprocess_mode="max",
)

# --- Batched inference (core.ml.batching), labelled by batcher name -------------------------
BATCH_SIZE = Histogram(
    "textsuite_batch_size",
    "Requests (rows) per model call made by a dynamic batcher.",
    ["batcher"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
BATCH_RUN_SECONDS = Histogram(
    "textsuite_batch_run_seconds",
    "Wall time of one batched model call in the batcher's worker thread.",
    ["batcher"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
BATCH_QUEUE_DEPTH = Gauge(
    "textsuite_batch_queue_depth",
    "Requests waiting in a dynamic batcher's queue (an autoscaling signal); a prefork "
    "worker's pool processes add up.",
    ["batcher"],
    multiprocess_mode="livesum",
)
BATCH_REQUESTS_REJECTED = Counter(
    "textsuite_batch_requests_rejected_total",
    "Requests refused because a dynamic batcher's queue was full (served as 503).",
    ["batcher"],
)

# --- The support bot (apps.support) ----------------------------------------------------------
SUPPORT_MESSAGES = Counter(
    "textsuite_support_messages_total",
    "Customer messages the bot decided on, by outcome: answered, or the handoff reason.",
    ["outcome"],
)

# --- The sentiment monitor (apps.sentiment) --------------------------------------------------
SENTIMENT_ARTICLES = Counter(
    "textsuite_sentiment_articles_total",
    "Articles delivered for scoring, by outcome: stored (new), duplicate, dead_lettered.",
    ["outcome"],
)
SENTIMENT_ALERT_CHANGES = Counter(
    "textsuite_sentiment_alert_changes_total",
    "Alert state changes, by the state entered: pending, firing, resolved.",
    ["state"],
)
STREAM_BACKLOG = Gauge(
    "textsuite_sentiment_stream_backlog",
    "Ingest stream entries the consumer group has not finished (unread plus unacknowledged); "
    "one count for the whole group, the latest any live process read.",
    multiprocess_mode="livemostrecent",
)
STREAM_LAG_SECONDS = Histogram(
    "textsuite_sentiment_stream_lag_seconds",
    "From an article's publication on the ingest stream to its score being stored.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
