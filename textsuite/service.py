"""The HTTP service: core's app factory with the apps' routers and the configured dispatcher."""

from __future__ import annotations

import functools

from fastapi import FastAPI

import migrations
from apps.recommend.service import recommend_lifespan, recommend_router
from apps.recommend.settings import RecommendSettings, get_recommend_settings
from apps.sentiment.dashboard import router as dashboard_router
from apps.sentiment.service import sentiment_lifespan, sentiment_router
from apps.sentiment.settings import SentimentSettings, get_sentiment_settings
from apps.support.service import support_lifespan, support_router
from apps.support.settings import SupportSettings, get_support_settings
from core.api import create_app
from core.jobs import JobDispatcher
from core.settings import Settings, get_settings
from workers.dispatch import create_dispatcher


def create_service(
    settings: Settings | None = None,
    *,
    support: SupportSettings | None = None,
    sentiment: SentimentSettings | None = None,
    recommend: RecommendSettings | None = None,
    dispatcher: JobDispatcher | None = None,
) -> FastAPI:
    """The whole API. Used by `textsuite serve` (as a uvicorn factory) and by the tests.
    Jobs go to `dispatcher`, by default Celery with a broker and threads here without one."""
    settings = settings or get_settings()
    support = support or get_support_settings()
    sentiment = sentiment or get_sentiment_settings()
    recommend = recommend or get_recommend_settings()
    return create_app(
        settings,
        dispatcher=dispatcher or create_dispatcher(settings),
        routers=[support_router(), sentiment_router(), recommend_router(), dashboard_router],
        readiness_checks={
            "migrations": functools.partial(migrations.check_at_head, settings.database_url)
        },
        lifespans=[
            support_lifespan(support),
            sentiment_lifespan(sentiment),
            recommend_lifespan(recommend),
        ],
    )
