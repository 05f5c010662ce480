"""The periodic work as Celery tasks, which `textsuite beat` queues (`TEXTSUITE_SCHEDULER=beat`).

Each task runs, in a `default` worker, the same function an API process runs on its own timer
under `api`, at the same period. Every piece is safe to run from several processes at once, so
a tick that overlaps another costs nothing; a lost tick is made up a period later, and a tick
older than its period is dropped unrun (`expires`), so a backlog never piles up.
"""

from __future__ import annotations

import logging

from celery import Celery

from apps.recommend.retention import RETENTION_WORK as RECOMMEND_RETENTION
from apps.recommend.retention import retention as recommend_retention
from apps.recommend.settings import get_recommend_settings
from apps.recommend.training import RETRAIN_WORK as RECOMMEND_RETRAINING
from apps.recommend.training import retraining as recommend_retraining
from apps.sentiment.retention import RETENTION_WORK as SENTIMENT_RETENTION
from apps.sentiment.retention import retention as sentiment_retention
from apps.sentiment.service import FEEDS_WORK, SWEEP_WORK, SentimentService
from apps.sentiment.settings import get_sentiment_settings
from apps.sentiment.training import RETRAIN_WORK as SENTIMENT_RETRAINING
from apps.sentiment.training import retraining as sentiment_retraining
from apps.support.retention import RETENTION_WORK as SUPPORT_RETENTION
from apps.support.retention import retention as support_retention
from apps.support.settings import get_support_settings
from apps.support.training import RETRAIN_WORK as SUPPORT_RETRAINING
from apps.support.training import retraining as support_retraining
from core.jobs import JobDispatcher
from core.scheduling import REDISPATCH_WORK, PeriodicWork, redispatch_work, run_periodic
from core.settings import Settings
from core.storage import get_session_factory

log = logging.getLogger(__name__)

TASK_PREFIX = "periodic."


# Every piece of periodic work there is. A worker declares a task for each, whatever its own
# settings turn on, so that no tick beat sends is refused as an unknown task.
ALL_WORK = (
    REDISPATCH_WORK,
    SWEEP_WORK,
    FEEDS_WORK,
    SENTIMENT_RETRAINING,
    SENTIMENT_RETENTION,
    SUPPORT_RETRAINING,
    SUPPORT_RETENTION,
    RECOMMEND_RETRAINING,
    RECOMMEND_RETENTION,
)


def periodic_work(settings: Settings, dispatcher: JobDispatcher) -> dict[str, PeriodicWork]:
    """The suite's periodic work that the settings turn on, by name: core's and each app's.
    Building it loads no model and opens no connection; that happens when a piece first runs."""
    factory = get_session_factory(settings.database_url)
    sentiment = get_sentiment_settings().model_copy(update={"stream_url": None})
    support, recommend = get_support_settings(), get_recommend_settings()
    return {
        **redispatch_work(settings, factory, dispatcher),
        **SentimentService.create(settings, sentiment, factory, dispatcher).periodic_work(),
        **sentiment_retraining(settings, sentiment, factory).work(dispatcher),
        **sentiment_retention(sentiment.retention_days, factory).work(),
        **support_retraining(support, factory).work(dispatcher),
        **support_retention(support.retention_days, factory).work(),
        **recommend_retraining(recommend, factory).work(dispatcher),
        **recommend_retention(recommend.list_retention_days, factory).work(),
    }


def task_name(work_name: str) -> str:
    return TASK_PREFIX + work_name.replace(" ", "_")


def register_periodic_tasks(app: Celery, settings: Settings) -> None:
    """Declare a task on `app` for each piece of periodic work, and `app`'s beat schedule: what
    these settings turn on, each at its period, on the `default` queue."""
    from workers.dispatch import CeleryDispatcher

    work = periodic_work(settings, CeleryDispatcher(app))
    for name in ALL_WORK:
        _declare(app, name, work.get(name))
    app.conf.beat_schedule = {
        name: {
            "task": task_name(name),
            "schedule": every_s,
            "options": {"queue": "default", "expires": every_s},
        }
        for name, (every_s, _run) in work.items()
    }


def _declare(app: Celery, name: str, work: PeriodicWork | None) -> None:
    def periodic() -> None:
        if work is None:
            log.warning(
                "beat sent %r, which this worker's settings turn off: give beat and the "
                "workers the same TEXTSUITE_* settings", name
            )  # fmt: skip
            return
        run_periodic(name, work[1])

    app.task(periodic, name=task_name(name), shared=False, acks_late=False, ignore_result=True)
