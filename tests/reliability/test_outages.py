"""PostgreSQL and Redis going away under a running service, and coming back: requests fail
cleanly (503 with Retry-After, never a 500 or a hang), nothing half-written is left, and the
service recovers by itself (the pool's pre-ping replaces broken connections; redis-py
reconnects) without a restart. The outage is a proxy in front of the real servers, cut and
restored by the test."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from apps.sentiment.models import Entity
from apps.sentiment.settings import load_sentiment_settings
from core.security import create_api_key
from core.storage.engine import get_session_factory, session_scope
from core.storage.models import Job, JobStatus
from tests.conftest import make_settings
from tests.reliability.faults import CuttableProxy
from textsuite.service import create_service


@pytest.fixture
def proxied_postgres(postgres_url: str) -> Iterator[tuple[str, CuttableProxy]]:
    url = make_url(postgres_url)
    with CuttableProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        yield url.set(host="127.0.0.1", port=proxy.port).render_as_string(False), proxy


def entity(ticker: str) -> dict[str, object]:
    return {"ticker": ticker, "name": f"{ticker} Holdings", "aliases": [], "sector": "Tech"}


def test_postgres_going_away_gives_503_and_the_pool_recovers(
    proxied_postgres: tuple[str, CuttableProxy], postgres_url: str, tmp_path: Path
) -> None:
    url, proxy = proxied_postgres
    settings = make_settings(
        database_url=url, var_dir=tmp_path / "var", artifacts_dir=tmp_path / "artifacts"
    )
    with session_scope(get_session_factory(postgres_url)) as session:
        key = create_api_key(session, "outage", ["sentiment"])[1]
    headers = {"X-API-Key": key}
    with TestClient(create_service(settings)) as client:
        first = client.post("/v1/sentiment/entities", json=entity("AAA"), headers=headers)
        assert first.status_code == 201, first.text

        proxy.cut()  # the database restarts: every connection drops, new ones are refused
        during = client.post("/v1/sentiment/entities", json=entity("BBB"), headers=headers)
        assert during.status_code == 503, during.text
        assert during.headers["retry-after"] and "database" in during.json()["detail"]
        assert client.get("/v1/sentiment/entities/AAA", headers=headers).status_code == 503
        assert client.get("/readyz").status_code == 503

        proxy.restore()  # back: the same service, no restart
        assert client.get("/readyz").status_code == 200
        again = client.post("/v1/sentiment/entities", json=entity("BBB"), headers=headers)
        assert again.status_code == 201, again.text
        assert client.get("/v1/sentiment/entities/AAA", headers=headers).status_code == 200
    with get_session_factory(postgres_url)() as session:
        assert session.scalar(select(func.count(Entity.id))) == 2  # nothing lost, nothing twice


def test_redis_going_away_refuses_articles_honestly_and_reconnects(
    sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    target = make_url(redis_url.replace("redis://", "postgresql://"))  # host and port only
    with CuttableProxy(target.host or "127.0.0.1", target.port or 6379) as proxy:
        stream_url = f"redis://127.0.0.1:{proxy.port}/{target.database or 0}"
        settings = make_settings(
            database_url=sqlite_url, var_dir=tmp_path / "var", artifacts_dir=tmp_path / "art"
        )
        sentiment = load_sentiment_settings(
            _env_file=None, stream_url=stream_url, stream_name="outage:articles"
        )
        with session_scope(get_session_factory(sqlite_url)) as session:
            key = create_api_key(session, "outage", ["sentiment"])[1]
        headers = {"X-API-Key": key}
        article = {"title": "Acme beats estimates", "source": "wire", "id": "a-1"}
        with TestClient(create_service(settings, sentiment=sentiment)) as client:
            queued = client.post("/v1/sentiment/articles", json=article, headers=headers)
            assert queued.status_code == 202, queued.text

            proxy.cut()
            refused = client.post(
                "/v1/sentiment/articles", json={**article, "id": "a-2"}, headers=headers
            )
            # Not accepted and then dropped: the client is told to send it again.
            assert refused.status_code == 503, refused.text
            assert refused.headers["retry-after"] and "nothing was queued" in refused.text

            proxy.restore()
            sent = client.post(
                "/v1/sentiment/articles", json={**article, "id": "a-2"}, headers=headers
            )
            assert sent.status_code == 202, sent.text


def test_the_broker_going_away_keeps_what_follows_stored_data_and_refuses_new_jobs(
    sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    """Items stored while the broker is away still get embedded: their job waits, queued, and
    is sent once the broker is back. A job the client asks for itself (training) is refused
    with a 503 to retry, never a 500."""
    target = make_url(redis_url.replace("redis://", "postgresql://"))  # host and port only
    with CuttableProxy(target.host or "127.0.0.1", target.port or 6379) as proxy:
        broker_url = f"redis://127.0.0.1:{proxy.port}/{target.database or 0}"
        settings = make_settings(
            database_url=sqlite_url, broker_url=broker_url, job_redispatch_after_s=1.0,
            var_dir=tmp_path / "var", artifacts_dir=tmp_path / "art",
        )  # fmt: skip
        factory = get_session_factory(sqlite_url)
        with session_scope(factory) as session:
            headers = {"X-API-Key": create_api_key(session, "outage", ["recommend"])[1]}
        item = {"id": "sku-1", "title": "Trail running shoes"}
        with TestClient(create_service(settings)) as client:
            proxy.cut()
            stored = client.post("/v1/recommend/items", json=item, headers=headers)
            assert stored.status_code == 200, stored.text
            job_id = uuid.UUID(stored.json()["embedding_job_id"])
            with factory() as session:
                assert session.get(Job, job_id).status is JobStatus.QUEUED

            refused = client.post("/v1/recommend/train", json={}, headers=headers)
            assert refused.status_code == 503, refused.text
            assert refused.headers["retry-after"] and "try again later" in refused.text

            proxy.restore()
            broker = redis.Redis.from_url(redis_url)
            deadline = time.monotonic() + 30
            with factory() as session:
                queue = session.get(Job, job_id).queue
            while not broker.llen(queue) and time.monotonic() < deadline:
                time.sleep(0.2)  # the service's redispatch loop runs every half second here
            assert broker.llen(queue) == 1  # the embedding job, sent once the broker was back
