"""The demo: replaying its five days of news raises the Halvorsen (HLVB) alert, and the other
eleven companies' ordinary news raises none (the default rules' false-alarm check)."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import selectinload

from apps.sentiment.demo import EPISODE_TICKER, load_watchlist, news_until_now
from apps.sentiment.ingest import Ingestor
from apps.sentiment.models import Alert, AlertState, Entity
from apps.sentiment.replay import replay
from apps.sentiment.scoring import SentimentScorer
from core.ml.serving import ProductionClassifier
from core.settings import Settings
from core.storage.engine import get_session_factory, session_scope


def test_the_demo_episode_raises_its_alert_and_only_it(sentiment_settings: Settings) -> None:
    factory = get_session_factory(sentiment_settings.database_url)
    with session_scope(factory) as session:  # the demo's own watchlist, as `make demo` has it
        session.execute(delete(Entity))  # (the test world's Halvorsen Pharma shares "Halvorsen")
        load_watchlist(session)
    ingestor = Ingestor(
        factory, SentimentScorer(ProductionClassifier(sentiment_settings, factory, "sentiment"))
    )
    replay(news_until_now(), ingestor.ingest)
    with factory() as session:
        alerts = session.scalars(
            select(Alert).options(selectinload(Alert.entity), selectinload(Alert.rule))
        ).all()
        summary = sorted((a.entity.ticker, a.rule.name, a.state.value) for a in alerts)
        fired = {(a.entity.ticker, a.rule.name) for a in alerts if a.fired_at is not None}
        episode = [a for a in alerts if a.entity.ticker == EPISODE_TICKER and a.fired_at]
    assert {ticker for ticker, _ in fired} == {EPISODE_TICKER}, summary
    # The first alert fires within the afternoon of the fourth day (13:02-17:20 UTC there).
    first = min(a.fired_at for a in episode)
    assert all(a.state is AlertState.RESOLVED for a in episode)  # the replay ran past it
    assert ("HLVB", "negative-share-1h") in fired or ("HLVB", "sharp-drop-1h") in fired
    news = news_until_now()
    start = min(a.published_at for a in news)
    day, hour = divmod((first - start).total_seconds() / 3600 + 7, 24)  # news starts at 07:00
    assert day == 3 and 13 <= hour <= 17.5, (day, hour)
