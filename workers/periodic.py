"""The periodic work as Celery tasks, which `textsuite beat` queues (`TEXTSUITE_SCHEDULER=beat`).

Each task runs, in a `default` worker, the same function an API process runs on its own timer
under `api`, at the same period. Every piece is safe to run from several processes at once, so
a tick that overlaps another costs nothing; a lost tick is made up a period later, and a tick
older than its period is dropped unrun (`expires`), so a backlog never piles up.
"""

from __future__ import annotations

import datetime as dt
import logging

from celery import Celery

from apps.recommend.service import PERIODIC_WORK as RECOMMEND_WORK
from apps.recommend.service import periodic_work as recommend_work
from apps.recommend.settings import get_recommend_settings
from apps.sentiment.service import PERIODIC_WORK as SENTIMENT_WORK
from apps.sentiment.service import SentimentService
from apps.sentiment.settings import get_sentiment_settings
from apps.support.service import PERIODIC_WORK as SUPPORT_WORK
from apps.support.service import periodic_work as support_work
from apps.support.settings import get_support_settings
from core.jobs import JobDispatcher
from core.scheduling import (
    FIRST_ROUND_MAX_S,
    REDISPATCH_WORK,
    PeriodicWork,
    redispatch_work,
    run_periodic,
)
from core.settings import Settings
from core.storage import get_session_factory

log = logging.getLogger(__name__)

TASK_PREFIX = "periodic."


# Every piece of periodic work there is. A worker declares a task for each, whatever its own
# settings turn on, so that no tick beat sends is refused as an unknown task.
ALL_WORK = (REDISPATCH_WORK, *SENTIMENT_WORK, *SUPPORT_WORK, *RECOMMEND_WORK)


def periodic_work(settings: Settings, dispatcher: JobDispatcher) -> dict[str, PeriodicWork]:
    """The suite's periodic work that the settings turn on, by name: core's and each app's.
    Building it loads no model and opens no connection; that happens when a piece first runs."""
    factory = get_session_factory(settings.database_url)
    sentiment = get_sentiment_settings().model_copy(update={"stream_url": None})
    service = SentimentService.create(settings, sentiment, factory, dispatcher)
    return {
        **redispatch_work(settings, factory, dispatcher),
        **service.periodic_work(settings, dispatcher),
        **support_work(get_support_settings(), factory, dispatcher),
        **recommend_work(get_recommend_settings(), factory, dispatcher),
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
    now = app.now()
    app.conf.beat_schedule = {
        name: {
            "task": task_name(name),
            "schedule": every_s,
            "options": {"queue": "default", "expires": every_s},
            # As if last sent so long ago that the first tick comes within FIRST_ROUND_MAX_S
            # of beat's start, as in an API process: an hourly round under a beat restarted
            # more often than hourly (every deploy) would otherwise never run.
            "last_run_at": now - dt.timedelta(seconds=every_s - min(every_s, FIRST_ROUND_MAX_S)),
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
