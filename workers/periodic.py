"""The periodic work as Celery tasks, which `textsuite beat` queues (`TEXTSUITE_SCHEDULER=beat`).

Each task runs, in a `default` worker, the same function an API process runs on its own timer
under `api`, at the same period. Every piece is safe to run from several processes at once, so
a tick that overlaps another costs nothing; a lost tick is made up a period later, and a tick
older than its period is dropped unrun (`expires`), so a backlog never piles up.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from celery import Celery

from apps.recommend.settings import get_recommend_settings
from apps.recommend.training import retrain_if_changed as retrain_recommender
from apps.sentiment.service import SentimentService
from apps.sentiment.settings import get_sentiment_settings
from apps.support.settings import get_support_settings
from apps.support.training import retrain_if_changed as retrain_support
from core.jobs import JobDispatcher, redispatch_every_s, redispatch_lost_jobs
from core.scheduling import PeriodicWork, retrain_check_s, run_periodic
from core.settings import Settings
from core.storage import get_session_factory

TASK_PREFIX = "periodic."


def periodic_work(settings: Settings, dispatcher: JobDispatcher) -> dict[str, PeriodicWork]:
    """The suite's periodic work, by name: core's and each app's. Building it loads no model
    and opens no connection; that happens when a piece first runs."""
    factory = get_session_factory(settings.database_url)
    work: dict[str, PeriodicWork] = {}
    if settings.job_redispatch_after_s > 0:
        redispatch = functools.partial(redispatch_lost_jobs, settings, factory, dispatcher)
        work["job redispatch"] = (redispatch_every_s(settings), redispatch)
    sentiment = get_sentiment_settings().model_copy(update={"stream_url": None})
    work.update(SentimentService.create(settings, sentiment, factory, dispatcher).periodic_work())
    support = get_support_settings()
    if support.retrain_every_h > 0:
        check = functools.partial(retrain_support, support, factory, dispatcher)
        work["support retraining"] = (retrain_check_s(support.retrain_every_h * 3600), check)
    recommend = get_recommend_settings()
    if recommend.retrain_every_h > 0:
        check = functools.partial(retrain_recommender, recommend, factory, dispatcher)
        work["recommender retraining"] = (retrain_check_s(recommend.retrain_every_h * 3600), check)
    return work


def task_name(work_name: str) -> str:
    return TASK_PREFIX + work_name.replace(" ", "_")


def register_periodic_tasks(app: Celery, settings: Settings) -> None:
    """Declare a task on `app` for each piece of periodic work, and `app`'s beat schedule:
    each task every period, on the `default` queue."""
    from workers.dispatch import CeleryDispatcher

    work = periodic_work(settings, CeleryDispatcher(app))
    for name, (_every_s, run) in work.items():
        _declare(app, name, run)
    app.conf.beat_schedule = {
        name: {
            "task": task_name(name),
            "schedule": every_s,
            "options": {"queue": "default", "expires": every_s},
        }
        for name, (every_s, _run) in work.items()
    }


def _declare(app: Celery, name: str, run: Callable[[], object]) -> None:
    def periodic() -> None:
        run_periodic(name, run)

    app.task(periodic, name=task_name(name), shared=False, acks_late=False, ignore_result=True)
