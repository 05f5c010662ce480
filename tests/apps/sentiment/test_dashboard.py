"""The dashboard in a real browser (Debian's Chromium through Playwright) against a real server:
articles posted to the API go through the Redis stream to a consumer, an alert fires, and the
page shows it without a reload; acknowledging it updates the list; the drill-down lists the
articles behind it. A screenshot is saved under test-artifacts/."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest

from apps.sentiment import stream
from apps.sentiment.ingest import Ingestor
from apps.sentiment.models import AlertRule, RuleKind
from apps.sentiment.scoring import SentimentScorer
from apps.sentiment.settings import SentimentSettings, load_sentiment_settings
from core.ml.serving import ProductionClassifier
from core.security import create_api_key
from core.settings import Settings
from core.storage.engine import get_session_factory, session_scope
from tests.apps.sentiment.conftest import BURST
from tests.apps.support.fake_chatwoot import ServerThread
from tests.conftest import REPO_ROOT
from textsuite.service import create_service

SCREENSHOT = REPO_ROOT / "test-artifacts" / "dashboard.png"

pytestmark = pytest.mark.browser


@pytest.fixture
def monitor(
    sentiment_settings: Settings, redis_url: str
) -> Iterator[tuple[str, str, SentimentSettings]]:
    """`textsuite serve` (in a thread) with the stream on, and one stream consumer."""
    sentiment = load_sentiment_settings(
        _env_file=None, stream_url=redis_url, stream_name="test:dashboard", stream_batch=8
    )
    factory = get_session_factory(sentiment_settings.database_url)
    with session_scope(factory) as session:
        key = create_api_key(session, "analyst", ["sentiment"])[1]
        session.add(
            AlertRule(name="negative-share-1h", kind=RuleKind.NEGATIVE_SHARE, window_s=3600,
                      threshold=0.6, min_articles=5)
        )  # fmt: skip
    server = ServerThread(create_service(sentiment_settings, sentiment=sentiment), lifespan="on")
    server.start()
    client = stream.connect(redis_url)
    scorer = SentimentScorer(ProductionClassifier(sentiment_settings, factory, "sentiment"))
    consumer = stream.StreamConsumer(client, Ingestor(factory, scorer), factory, sentiment)
    consumer.ensure_group()
    worker = threading.Thread(target=consumer.run, kwargs={"block_ms": 100}, daemon=True)
    worker.start()
    try:
        yield server.url, key, sentiment
    finally:
        consumer.stop()
        worker.join(timeout=30)
        client.close()
        server.stop()


def test_an_alert_appears_live_and_is_acknowledged(browser, monitor) -> None:
    url, key, _ = monitor
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    refused: list[str] = []  # what the pages' Content-Security-Policy blocked, if anything
    page.on("console", lambda m: refused.append(m.text) if "Security Policy" in m.text else None)
    page.goto(f"{url}/dashboard")
    assert page.url.endswith("/dashboard/login")  # not signed in: to the login page

    page.fill("#key", "wrong-key")
    page.click("button[type=submit]")
    page.wait_for_selector("#error:not([hidden])")
    assert "invalid" in page.inner_text("#error")

    page.fill("#key", key)
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}/dashboard")
    page.wait_for_selector("#watchlist tbody tr[data-ticker=HLVP]")
    assert page.locator("#watchlist tbody tr").count() == 3
    page.wait_for_selector("#live.on")  # the event stream is connected
    assert page.locator("#alerts li").count() == 0
    page.evaluate("window.__sameDocument = true")

    posted = httpx.post(
        f"{url}/v1/sentiment/articles",
        json={"articles": [{"title": title, "source": "wire"} for title in BURST]},
        headers={"X-API-Key": key},
    )
    assert posted.status_code == 202, posted.text  # queued on the stream

    alert = page.wait_for_selector("#alerts li.alert.firing", timeout=30_000)
    assert "HLVP" in alert.inner_text() and "negative-share-1h" in alert.inner_text()
    assert page.evaluate("window.__sameDocument") is True  # no reload happened

    alert.click()  # drill-down: the articles behind the alert, and the chart
    page.wait_for_selector("#articles li")
    headlines = page.inner_text("#articles")
    assert sum(title in headlines for title in BURST) >= 5
    page.wait_for_selector("#chart .main-svg")
    assert "HLVP" in page.inner_text("#chart-title")
    assert refused == [], refused

    # An analyst relabels an article the model read wrong, from the drill-down.
    first = page.locator("#articles li").first
    article_id = first.get_attribute("data-id")
    first.locator("select.relabel").select_option("neutral")
    page.wait_for_selector(f"#articles li[data-id='{article_id}'] .fixed")
    assert "analyst: neutral" in page.inner_text(f"#articles li[data-id='{article_id}']")
    stored = httpx.get(f"{url}/v1/sentiment/articles/{article_id}", headers={"X-API-Key": key})
    assert stored.json()["analyst_label"] == "neutral"

    page.click("#alerts li.alert.firing button.ack")
    page.wait_for_selector("#alerts li.alert .acked")
    assert "acknowledged by analyst" in page.inner_text("#alerts")
    acknowledged = httpx.get(f"{url}/v1/sentiment/alerts", headers={"X-API-Key": key}).json()
    assert acknowledged[0]["acknowledged_by"] == "analyst"

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)


def test_the_dashboard_needs_a_sentiment_key(
    browser, monitor, sentiment_settings: Settings
) -> None:
    url, _, _ = monitor
    with session_scope(get_session_factory(sentiment_settings.database_url)) as session:
        support_key = create_api_key(session, "agent", ["support"])[1]
    page = browser.new_page()
    page.goto(f"{url}/dashboard/login")
    page.fill("#key", support_key)
    page.click("button[type=submit]")
    page.wait_for_selector("#error:not([hidden])")
    assert "sentiment" in page.inner_text("#error")
    page.goto(f"{url}/dashboard")
    assert page.url.endswith("/dashboard/login")
    assert httpx.get(f"{url}/dashboard/static/plotly.min.js").status_code == 200
    head = httpx.head(f"{url}/dashboard/login")  # what uptime checks send
    assert head.status_code == 200
    assert "frame-ancestors 'none'" in head.headers["content-security-policy"]
    assert httpx.get(f"{url}/dashboard/static/../settings.py").status_code == 404
