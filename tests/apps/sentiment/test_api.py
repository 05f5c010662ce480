"""The sentiment HTTP API on embedded defaults: articles scored in-process, the watchlist."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from core.security import create_api_key
from core.settings import Settings
from core.storage.engine import get_session_factory, session_scope
from textsuite.service import create_service


def key_for(settings: Settings, *scopes: str) -> dict[str, str]:
    with session_scope(get_session_factory(settings.database_url)) as session:
        return {"X-API-Key": create_api_key(session, "test", scopes)[1]}


@pytest.fixture
def api(sentiment_settings: Settings) -> Iterator[tuple[TestClient, dict[str, str]]]:
    with TestClient(create_service(sentiment_settings)) as client:
        yield client, key_for(sentiment_settings, "sentiment")


def batched_rows(name: str) -> float:
    """Rows the serving batchers of model `name`'s versions have run (`/metrics`)."""
    from prometheus_client import REGISTRY

    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "textsuite_batch_size"
        for sample in metric.samples
        if sample.name.endswith("_sum") and sample.labels["batcher"].startswith(f"{name}-v")
    )


def test_articles_are_scored_once_and_linked(api: tuple[TestClient, dict[str, str]]) -> None:
    client, key = api
    rows_before = batched_rows("sentiment")
    single = client.post(
        "/v1/sentiment/articles",
        json={"title": "Halvorsen Pharma shares plunge as regulator rejects its drug"},
        headers=key,
    )
    assert single.status_code == 200, single.text
    [first] = single.json()["articles"]
    assert first["label"] == "negative" and first["score"] < -0.3 and not first["duplicate"]
    # A request's few articles go through the serving batcher, shared with other requests.
    assert batched_rows("sentiment") == rows_before + 1

    batch = client.post(
        "/v1/sentiment/articles",
        json={
            "articles": [
                {"title": "halvorsen pharma shares plunge as regulator rejects its drug"},
                {
                    "id": "w-9",
                    "source": "wire",
                    "url": "https://news.example/nwrb-record",
                    "title": "Northwind Robotics posts record profit, raises guidance",
                    "published_at": "2026-11-26T14:00:00Z",
                },
                {"title": "$CRBK to hold its annual meeting on May 14"},
            ]
        },
        headers=key,
    )
    assert batch.status_code == 200, batch.text
    again, northwind, corvid = batch.json()["articles"]
    assert again == {**first, "duplicate": True}
    assert northwind["label"] == "positive" and northwind["score"] > 0.3

    listed = client.get("/v1/sentiment/articles", params={"ticker": "NWRB"}, headers=key)
    assert [a["id"] for a in listed.json()] == [northwind["id"]]
    [article] = listed.json()
    assert article["tickers"] == ["NWRB"] and article["external_id"] == "w-9"
    assert set(article["probabilities"]) == {"negative", "neutral", "positive"}
    assert article["model_version_id"] is not None
    everything = [a["id"] for a in client.get("/v1/sentiment/articles", headers=key).json()]
    assert len(everything) == 3
    pages = [
        client.get("/v1/sentiment/articles", params={"limit": 2, "offset": o}, headers=key)
        for o in (0, 2, 4)
    ]
    assert [[a["id"] for a in page.json()] for page in pages] == [
        everything[:2],
        everything[2:],
        [],
    ]
    negative = client.get("/v1/sentiment/articles", params={"label": "negative"}, headers=key)
    assert [a["id"] for a in negative.json()] == [first["id"]]
    since = client.get(
        "/v1/sentiment/articles",
        params={"since": "2026-11-26T14:00:00Z", "until": "2026-11-26T15:00:00Z"},
        headers=key,
    )
    assert [a["id"] for a in since.json()] == [northwind["id"]]
    by_source_id = client.get("/v1/sentiment/articles", params={"external_id": "w-9"}, headers=key)
    assert [a["id"] for a in by_source_id.json()] == [northwind["id"]]
    shown = client.get(f"/v1/sentiment/articles/{corvid['id']}", headers=key).json()
    assert shown["tickers"] == ["CRBK"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "title"),
        ({"title": ""}, "title"),
        ({"title": "x", "published_at": "2026-11-26T14:00:00"}, "timezone"),
        ({"title": "x", "published_at": "0001-01-01T00:00:00Z"}, "before 1970"),
        ({"title": "x", "mood": "good"}, "mood"),
        ({"articles": []}, "at least 1"),
        ({"articles": [{"title": "x"}] * 1001}, "at most 1000"),
        ({"articles": [{"title": "ok"}, {"body": "no title"}]}, "title"),
        ({"title": "x" * 20_001}, "20000"),
    ],
)
def test_bad_articles_get_422_and_nothing_is_stored(
    api: tuple[TestClient, dict[str, str]], body: dict[str, Any], message: str
) -> None:
    client, key = api
    response = client.post("/v1/sentiment/articles", json=body, headers=key)
    assert response.status_code == 422, response.text
    assert message in response.text
    assert client.get("/v1/sentiment/articles", headers=key).json() == []


def test_reading_with_bad_filters_is_refused(api: tuple[TestClient, dict[str, str]]) -> None:
    client, key = api
    assert (
        client.get("/v1/sentiment/articles", params={"ticker": "NOPE"}, headers=key).status_code
        == 404
    )
    assert (
        client.get("/v1/sentiment/articles", params={"label": "bullish"}, headers=key).status_code
        == 422
    )
    backwards = {"since": "2026-11-26T15:00:00Z", "until": "2026-11-26T14:00:00Z"}
    for path in ("/v1/sentiment/articles", "/v1/sentiment/entities/NWRB/series"):
        refused = client.get(path, params=backwards, headers=key)
        assert refused.status_code == 422 and "since must be before until" in refused.text
    assert (
        client.get("/v1/sentiment/articles", params={"offset": -1}, headers=key).status_code == 422
    )
    naive = client.get(
        "/v1/sentiment/articles", params={"since": "2026-11-26T14:00:00"}, headers=key
    )
    assert naive.status_code == 422 and "time zone" in naive.text
    for path in ("/v1/sentiment/articles", "/v1/sentiment/entities/AAPL/series"):
        ancient = client.get(path, params={"until": "0001-01-03T00:00:00Z"}, headers=key)
        assert ancient.status_code == 422 and "before 1970" in ancient.text, path
    assert client.get("/v1/sentiment/articles/not-a-uuid", headers=key).status_code == 422
    missing = client.get("/v1/sentiment/articles/00000000-0000-0000-0000-000000000000", headers=key)
    assert missing.status_code == 404


def test_without_a_model_nothing_is_accepted(client: TestClient, api_key: Any) -> None:
    headers = {"X-API-Key": api_key("sentiment")}
    response = client.post("/v1/sentiment/articles", json={"title": "Apple beats"}, headers=headers)
    assert response.status_code == 503
    assert "textsuite train sentiment" in response.json()["detail"]
    assert "nothing was stored" in response.json()["detail"]
    assert response.headers["Retry-After"]
    assert client.get("/v1/sentiment/articles", headers=headers).json() == []


def test_the_sentiment_scope_is_required(
    api: tuple[TestClient, dict[str, str]], sentiment_settings: Settings
) -> None:
    client, _ = api
    assert client.get("/v1/sentiment/articles").status_code == 401
    support_only = key_for(sentiment_settings, "support")
    assert client.get("/v1/sentiment/entities", headers=support_only).status_code == 403
    assert (
        client.post("/v1/sentiment/articles", json={"title": "x"}, headers=support_only).status_code
        == 403
    )


def test_the_watchlist_over_the_api(api: tuple[TestClient, dict[str, str]]) -> None:
    client, key = api
    listed = client.get("/v1/sentiment/entities", headers=key).json()
    assert [e["ticker"] for e in listed] == ["CRBK", "HLVP", "NWRB"]
    created = client.post(
        "/v1/sentiment/entities",
        json={
            "ticker": "$ossm",
            "name": "Osmund Mining",
            "aliases": ["Osmund"],
            "sector": "Materials",
        },
        headers=key,
    )
    assert created.status_code == 201 and created.json()["ticker"] == "OSSM"
    conflict = client.post(
        "/v1/sentiment/entities", json={"ticker": "OSSM", "name": "X"}, headers=key
    )
    assert conflict.status_code == 409 and "already" in conflict.json()["detail"]
    scored = client.post(
        "/v1/sentiment/articles", json={"title": "Osmund strikes gold"}, headers=key
    )
    article_id = scored.json()["articles"][0]["id"]
    assert client.get(f"/v1/sentiment/articles/{article_id}", headers=key).json()["tickers"] == [
        "OSSM"
    ]

    replaced = client.put(
        "/v1/sentiment/entities/ossm",
        json={"ticker": "OSSM", "name": "Osmund Mining", "aliases": [], "active": False},
        headers=key,
    )
    assert replaced.status_code == 200 and replaced.json()["active"] is False
    renamed = client.put(
        "/v1/sentiment/entities/OSSM", json={"ticker": "OSM", "name": "X"}, headers=key
    )
    assert renamed.status_code == 422 and "differs" in renamed.text
    assert (
        client.post(
            "/v1/sentiment/entities", json={"ticker": "bad ticker", "name": "X"}, headers=key
        ).status_code
        == 422
    )
    assert client.delete("/v1/sentiment/entities/OSSM", headers=key).status_code == 204
    assert client.get("/v1/sentiment/entities/OSSM", headers=key).status_code == 404
    assert client.delete("/v1/sentiment/entities/OSSM", headers=key).status_code == 404
    # The article stays; only its link to the removed company goes.
    assert client.get(f"/v1/sentiment/articles/{article_id}", headers=key).json()["tickers"] == []


def test_a_company_added_later_gets_its_recent_articles(
    api: tuple[TestClient, dict[str, str]],
) -> None:
    client, key = api
    posted = client.post(
        "/v1/sentiment/articles",
        json={"articles": [{"title": "Osmund Mining strikes gold in Chile"},
                           {"title": "Gold prices steady"}]},
        headers=key,
    )  # fmt: skip
    first = posted.json()["articles"][0]["id"]
    entry = {"ticker": "OSSM", "name": "Osmund Mining"}
    assert client.post("/v1/sentiment/entities", json=entry, headers=key).status_code == 201
    listed = client.get("/v1/sentiment/articles", params={"ticker": "OSSM"}, headers=key).json()
    assert [a["id"] for a in listed] == [first]
    # A new alias links what it names, once.
    client.post("/v1/sentiment/articles", json={"title": "The Atacama mine floods"}, headers=key)
    assert (
        len(client.get("/v1/sentiment/articles", params={"ticker": "OSSM"}, headers=key).json())
        == 1
    )
    renamed = {**entry, "aliases": ["Atacama mine"]}
    assert client.put("/v1/sentiment/entities/OSSM", json=renamed, headers=key).status_code == 200
    assert client.put("/v1/sentiment/entities/OSSM", json=renamed, headers=key).status_code == 200
    assert (
        len(client.get("/v1/sentiment/articles", params={"ticker": "OSSM"}, headers=key).json())
        == 2
    )
    # The alias taken away (it named another company's mine): the links it made go with it.
    assert client.put("/v1/sentiment/entities/OSSM", json=entry, headers=key).status_code == 200
    listed = client.get("/v1/sentiment/articles", params={"ticker": "OSSM"}, headers=key).json()
    assert [a["id"] for a in listed] == [first]


def test_a_production_model_whose_files_are_damaged_is_a_clear_503_until_replaced(
    sentiment_settings: Settings, tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    """At start-up the production version's weights are garbage: nothing is stored, the
    client is told to retry, the log names the version; promoting a good version fixes it
    without a restart."""
    import shutil
    from pathlib import Path

    from core.ml import versions
    from core.storage.models import ModelVersion

    factory = get_session_factory(sentiment_settings.database_url)
    with session_scope(factory) as session:
        current = versions.production_version(session, "sentiment")
        good = Path(current.artifact_path)
        broken = tmp_path / "broken"
        shutil.copytree(good, broken)
        (broken / "model.safetensors").write_bytes(b"not weights")
        current.artifact_path = str(broken)
        broken_version = current.version
    headers = key_for(sentiment_settings, "sentiment", "admin")
    article = {"title": "Acme Robotics beats estimates"}
    with TestClient(create_service(sentiment_settings)) as client:
        refused = client.post("/v1/sentiment/articles", json=article, headers=headers)
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"] and "nothing was stored" in refused.text
        # (The service tries to load it at start-up; this waits for that and tries again.)
        assert client.app.state.sentiment.ingestor.scorer.model.current(force=True) is None
        assert f"cannot load sentiment v{broken_version}" in caplog.text
        not_ready = client.get("/readyz")  # nor is the process ready: it has no model
        assert not_ready.status_code == 503
        reason = not_ready.json()["checks"]["sentiment_model"]
        assert reason.startswith(f"ModelNotServed: sentiment v{broken_version}: cannot load")

        with session_scope(factory) as session:
            fixed = versions.record_version(
                session,
                name="sentiment",
                task="classification",
                base_model=current.base_model,
                artifact_path=good,
                metrics=dict(current.metrics),
                config=dict(current.config),
            )
            number = fixed.version
        promoted = client.post(
            "/v1/models/sentiment/promote", json={"version": number}, headers=headers
        )
        assert promoted.status_code == 200, promoted.text
        service = client.app.state.sentiment
        service.ingestor.scorer.model.current(force=True)  # what the next refresh would do
        scored = client.post("/v1/sentiment/articles", json=article, headers=headers)
        assert scored.status_code == 200, scored.text
        assert client.get("/readyz").json()["checks"]["sentiment_model"] == "ok"
    with factory() as session:
        assert session.get(ModelVersion, fixed.id).stage.value == "production"


def test_analysts_correct_a_label_and_the_next_training_learns_it(
    api: tuple[TestClient, dict[str, str]], sentiment_settings: Settings
) -> None:
    from apps.sentiment.training import SentimentTrainParams, training_data

    client, key = api
    posted = client.post(
        "/v1/sentiment/articles",
        json={"articles": [
            {"title": "Corvid Bank to close 40 branches", "body": "Savings of $90m a year."},
            {"title": "Northwind Robotics posts record profit, raises guidance"},
        ]},
        headers=key,
    ).json()["articles"]  # fmt: skip
    article, other = posted[0]["id"], posted[1]["id"]
    fixed = client.put(f"/v1/sentiment/articles/{article}/label", json={"label": "positive"},
                       headers=key)  # fmt: skip
    assert fixed.status_code == 200, fixed.text
    assert fixed.json()["analyst_label"] == "positive"
    assert fixed.json()["label"] == posted[0]["label"]  # the model's reading stays
    again = client.put(f"/v1/sentiment/articles/{article}/label", json={"label": "neutral"},
                       headers=key)  # fmt: skip
    assert again.json()["analyst_label"] == "neutral"  # changed, not added twice
    shown = client.get(f"/v1/sentiment/articles/{article}", headers=key).json()
    assert shown["analyst_label"] == "neutral"
    relabelled = client.get("/v1/sentiment/articles?corrected=true", headers=key).json()
    assert [a["id"] for a in relabelled] == [article]
    others = client.get("/v1/sentiment/articles?corrected=false", headers=key).json()
    assert other in [a["id"] for a in others] and article not in [a["id"] for a in others]
    for analyst_label, expected in [("neutral", [article]), ("positive", [])]:
        found = client.get(f"/v1/sentiment/articles?analyst_label={analyst_label}", headers=key)
        assert [a["id"] for a in found.json()] == expected
    bearish = client.get("/v1/sentiment/articles?analyst_label=bearish", headers=key)
    assert bearish.status_code == 422 and "analyst_label must be one of" in bearish.text

    factory = get_session_factory(sentiment_settings.database_url)
    params = SentimentTrainParams(include_twitter=False, include_demo=False)
    learnt = training_data(sentiment_settings, factory, params)
    assert list(zip(learnt.texts, learnt.labels, strict=True)) == [
        ("Corvid Bank to close 40 branches\nSavings of $90m a year.", "neutral")
    ]
    without = SentimentTrainParams(include_demo=False, include_twitter=False,
                                   include_corrections=False)  # fmt: skip
    with pytest.raises(ValueError, match="no training data"):
        training_data(sentiment_settings, factory, without)

    for body, status in [({"label": "bearish"}, 422), ({"label": "negative", "x": 1}, 422)]:
        refused = client.put(f"/v1/sentiment/articles/{article}/label", json=body, headers=key)
        assert refused.status_code == status, refused.text
    missing = "00000000-0000-4000-8000-000000000000"
    assert client.put(f"/v1/sentiment/articles/{missing}/label", json={"label": "negative"},
                      headers=key).status_code == 404  # fmt: skip
    label_url = f"/v1/sentiment/articles/{article}/label"
    assert client.delete(label_url, headers=key).status_code == 204
    assert client.delete(label_url, headers=key).status_code == 404
    withdrawn = client.get(f"/v1/sentiment/articles/{article}", headers=key).json()
    assert withdrawn["analyst_label"] is None


def test_the_schedule_retrains_sentiment_when_analysts_relabelled_articles(
    api: tuple[TestClient, dict[str, str]], sentiment_settings: Settings
) -> None:
    """The world's model counts as trained by a job with the world's recipe: its data is what
    that recipe reads now, until an analyst relabels an article."""
    from sqlalchemy import select

    from apps.sentiment.settings import load_sentiment_settings
    from apps.sentiment.training import retraining
    from core import jobs
    from core.storage.models import Job, JobStatus, TrainingRun
    from tests.apps.sentiment.conftest import QUICK_TRAINING
    from workers.registry import get_definition

    class Broker:
        def __init__(self) -> None:
            self.sent: list[str] = []

        def spec_for(self, kind: str) -> jobs.JobKindSpec:
            return get_definition(kind).spec

        def dispatch(self, job_id, kind: str, queue: str) -> None:
            self.sent.append(kind)

    client, key = api
    factory = get_session_factory(sentiment_settings.database_url)
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    with session_scope(factory) as session:
        run = session.scalars(select(TrainingRun)).one()
        recipe = {"arguments": QUICK_TRAINING, "include_twitter": False, "include_demo": False,
                  "extra_path": str(sentiment_world_headlines(sentiment_settings))}  # fmt: skip
        job = Job(kind="sentiment.train", queue="gpu", status=JobStatus.SUCCEEDED,
                  params=recipe, created_at=long_ago)  # fmt: skip
        session.add(job)
        session.flush()
        run.job_id, run.created_at = job.id, long_ago
    sentiment = load_sentiment_settings(_env_file=None, retrain_every_h=24)
    broker = Broker()
    assert retraining(sentiment_settings, sentiment, factory).check(broker).reason == (
        "no new training data since the last run"
    )
    posted = client.post("/v1/sentiment/articles", json={"title": "Corvid Bank opens in Oslo"},
                         headers=key).json()["articles"][0]  # fmt: skip
    client.put(f"/v1/sentiment/articles/{posted['id']}/label", json={"label": "positive"},
               headers=key)  # fmt: skip
    due = retraining(sentiment_settings, sentiment, factory).check(broker)
    assert due.job_id is not None and broker.sent == ["sentiment.train"]
    with factory() as session:
        assert session.get(Job, due.job_id).params == {
            **recipe, "promotion": "if-not-worse", "include_corrections": True
        }  # fmt: skip


def sentiment_world_headlines(settings: Settings) -> Path:
    """The headlines file the world's model was trained on (beside its artifacts)."""
    return Path(settings.artifacts_dir).parent / "headlines.csv"


def test_stats_count_articles_by_version_corrections_and_alerts(
    api: tuple[TestClient, dict[str, str]], sentiment_settings: Settings
) -> None:
    from sqlalchemy import select

    from apps.sentiment.models import Alert, AlertRule, AlertState, Entity, RuleKind

    client, key = api
    posted = client.post(
        "/v1/sentiment/articles",
        json={"articles": [{"title": "Halvorsen Pharma shares plunge as regulator rejects"},
                           {"title": "Northwind Robotics posts record profit"}]},
        headers=key,
    ).json()["articles"]  # fmt: skip
    model_label = posted[0]["label"]
    other = "positive" if model_label != "positive" else "negative"
    client.put(f"/v1/sentiment/articles/{posted[0]['id']}/label", json={"label": other},
               headers=key)  # fmt: skip
    client.put(
        f"/v1/sentiment/articles/{posted[1]['id']}/label",
        json={"label": posted[1]["label"]},
        headers=key,
    )  # agrees: not a correction
    now = dt.datetime.now(dt.UTC)
    with session_scope(get_session_factory(sentiment_settings.database_url)) as session:
        entity = session.scalars(select(Entity).where(Entity.ticker == "HLVP")).one()
        rule = AlertRule(name="negative-share-1h", kind=RuleKind.NEGATIVE_SHARE,
                         window_s=3600, threshold=0.6)  # fmt: skip
        session.add(rule)
        session.flush()
        for state, acked in [(AlertState.FIRING, True), (AlertState.RESOLVED, False)]:
            session.add(Alert(entity_id=entity.id, rule_id=rule.id, state=state, value=0.8,
                              threshold=0.6, window_start=now, window_end=now, started_at=now,
                              acknowledged_at=now if acked else None))  # fmt: skip
    stats = client.get("/v1/sentiment/stats", headers=key)
    assert stats.status_code == 200, stats.text
    body = stats.json()
    assert (body["articles"], body["unscored"]) == (2, 0)
    assert list(body["versions"]) == ["sentiment v1"]
    version = body["versions"]["sentiment v1"]
    assert version["articles"] == 2 and sum(version["labels"].values()) == 2
    assert version["corrected"] == 1 and version["correction_rate"] == 0.5
    assert version["corrections"] == body["corrections"] == {f"{model_label} -> {other}": 1}
    assert body["alerts"] == {"firing": 1, "resolved": 1} and body["acknowledged"] == 1
    bad = client.get("/v1/sentiment/stats", params={"since": "tomorrow"}, headers=key)
    assert bad.status_code == 422
