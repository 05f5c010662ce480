"""The demo news monitor: a fictional watchlist, five days of news with one negative episode
(Halvorsen Biotherapeutics, HLVB), and labelled headlines for training (see README.md)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session

from apps.sentiment.alerts import ensure_default_rules
from apps.sentiment.articles import ArticleIn
from apps.sentiment.entities import read_watchlist, upsert_entities
from apps.sentiment.replay import read_articles
from core.storage.base import utcnow

DEMO_DIR = Path(__file__).resolve().parent
WATCHLIST = DEMO_DIR / "watchlist.yaml"
NEWS = DEMO_DIR / "news.jsonl"
EPISODE_TICKER = "HLVB"


def load_watchlist(session: Session) -> int:
    """Upsert the demo watchlist and install the default alert rules; flushes, no commit."""
    entries = read_watchlist(WATCHLIST)
    upsert_entities(session, entries)
    ensure_default_rules(session)
    return len(entries)


def news_until_now() -> list[ArticleIn]:
    """The demo news, shifted in time so that its last article was published just now: the
    replay then looks like the last five days, and alerts land where a live run puts them."""
    articles = read_articles(NEWS)
    shift = utcnow() - max(a.published_at for a in articles if a.published_at)
    return [
        a.model_copy(update={"published_at": a.published_at + shift}) if a.published_at else a
        for a in articles
    ]
