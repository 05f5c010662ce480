"""The ingest stream: articles on a Redis stream, scored by a consumer group.

Producers `publish` articles (XADD). Each consumer reads a batch (XREADGROUP), ingests it (store
once, link, score, commit) and only then acknowledges it (XACK): a consumer that dies mid-batch
leaves its messages pending, and another consumer reclaims them once they have been idle for
`claim_idle_ms` (XAUTOCLAIM). Ingesting is idempotent, so a redelivered article is stored and
scored once. A message that cannot be ingested after `max_deliveries` attempts, or that is not
an article at all, becomes a dead-letter record and is acknowledged.

Nothing unread is ever trimmed away: producers refuse to add to a backlog (undelivered plus
unacknowledged entries) above its limit, with `StreamFull`, and consumers trim only the entries
every group has acknowledged. What a Redis restart loses depends on how Redis persists;
`durability` says which case a server is in.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import redis
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from apps.sentiment.articles import ArticleIn
from apps.sentiment.ingest import Ingestor
from apps.sentiment.models import DeadLetter
from apps.sentiment.scoring import NoSentimentModel
from apps.sentiment.settings import SentimentSettings
from core.metrics import SENTIMENT_ARTICLES, STREAM_BACKLOG, STREAM_LAG_SECONDS
from core.storage.engine import session_scope
from core.validation import problems, strict_json_loads

log = logging.getLogger(__name__)

FIELD = "article"  # each stream entry holds one article as JSON under this field


def connect(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True, health_check_interval=30)


class StreamFull(Exception):
    """The consumers are too far behind to take more: nothing was queued."""

    def __init__(self, backlog: int, limit: int) -> None:
        super().__init__(
            f"the scoring workers are {backlog:,} articles behind (limit {limit:,});"
            " nothing was queued"
        )
        self.backlog, self.limit = backlog, limit


def publish(
    client: redis.Redis,
    stream: str,
    items: Sequence[ArticleIn],
    *,
    group: str | None = None,
    max_backlog: int | None = None,
) -> list[str]:
    """XADD each article; returns the stream ids (in order).

    With `max_backlog`, raises `StreamFull` instead when `group`'s backlog plus `items` would
    exceed it."""
    if max_backlog is not None:
        waiting = backlog(client, stream, group)
        if waiting + len(items) > max_backlog:
            raise StreamFull(waiting, max_backlog)
    pipe = client.pipeline(transaction=False)
    for item in items:
        pipe.xadd(stream, {FIELD: item.model_dump_json(exclude_none=True)})
    return list(pipe.execute())


def backlog(client: redis.Redis, stream: str, group: str | None) -> int:
    """Entries `group` has not finished: never delivered (its lag) plus delivered and not yet
    acknowledged. Before the group exists, every entry waits."""
    try:
        groups = client.xinfo_groups(stream)
    except redis.ResponseError:  # no such stream yet
        return 0
    for info in groups:
        if info["name"] == group:
            lag = info.get("lag")
            if lag is None:  # Redis cannot tell after deletions mid-stream: an upper bound
                lag = client.xlen(stream)
            return int(lag) + int(info["pending"])
    return int(client.xlen(stream))


def trim_finished(client: redis.Redis, stream: str) -> int:
    """Remove the entries that every consumer group has delivered and acknowledged; returns
    how many went. Pending entries stay for `XAUTOCLAIM`, unread ones for their readers."""
    try:
        groups = client.xinfo_groups(stream)
    except redis.ResponseError:
        return 0
    if not groups:
        return 0
    keep_from: tuple[int, int] | None = None
    for info in groups:
        summary = client.xpending(stream, info["name"])
        if summary["pending"]:
            first = _stream_id(summary["min"])
        else:
            milliseconds, sequence = _stream_id(info["last-delivered-id"])
            first = (milliseconds, sequence + 1)
        keep_from = first if keep_from is None else min(keep_from, first)
    assert keep_from is not None
    return int(client.xtrim(stream, minid=f"{keep_from[0]}-{keep_from[1]}", approximate=False))


def _stream_id(value: str) -> tuple[int, int]:
    milliseconds, _, sequence = value.partition("-")
    return int(milliseconds), int(sequence or 0)


def durability(client: redis.Redis) -> str:
    """What of the stream survives a Redis restart, from the server's persistence settings.

    `aof-always`: every acknowledged write; `aof-everysec`: all but the last second on a
    machine crash (nothing on a Redis crash); `snapshots`: what the last RDB snapshot holds;
    `none`: nothing; `unknown` where the server does not allow CONFIG GET.
    """
    try:
        if client.info("persistence").get("aof_enabled"):
            fsync = client.config_get("appendfsync").get("appendfsync")
            return f"aof-{fsync}" if fsync else "aof"
        return "snapshots" if client.config_get("save").get("save") else "none"
    except redis.ResponseError:
        return "unknown"


@dataclass
class ConsumerStats:
    read: int = 0
    ingested: int = 0
    duplicates: int = 0
    reclaimed: int = 0
    dead_lettered: int = 0
    failed_batches: int = 0


@dataclass(frozen=True)
class _Message:
    id: str
    fields: dict[str, str]


class StreamConsumer:
    """One member of the consumer group; `run()` until `stop()`, or `poll()` step by step."""

    def __init__(
        self,
        client: redis.Redis,
        ingestor: Ingestor,
        factory: sessionmaker[Session],
        settings: SentimentSettings,
        *,
        name: str | None = None,
    ) -> None:
        self.client, self.ingestor, self.factory = client, ingestor, factory
        self.stream, self.group = settings.stream_name, settings.stream_group
        self.batch = settings.stream_batch
        self.claim_idle_ms = settings.stream_claim_idle_ms
        self.max_deliveries = settings.stream_max_deliveries
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.stats = ConsumerStats()
        self._stopping = threading.Event()

    def ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def stop(self) -> None:
        self._stopping.set()

    def run(
        self, block_ms: int = 1000, sweep_every_s: float = 60.0, trim_every_s: float = 5.0
    ) -> ConsumerStats:
        """Consume until `stop()`; survives Redis restarts and a missing model (it waits).

        Every `sweep_every_s` it also re-evaluates entities with open alerts, so alerts of
        entities that went quiet resolve; every `trim_every_s` it trims what all groups have
        finished with.
        """
        self.ensure_group()
        swept = trimmed = time.monotonic()
        outage = _Outage()
        while not self._stopping.is_set():
            try:
                if time.monotonic() - swept >= sweep_every_s:
                    swept = time.monotonic()
                    self.ingestor.sweep()
                if time.monotonic() - trimmed >= trim_every_s:
                    trimmed = time.monotonic()
                    trim_finished(self.client, self.stream)
                    STREAM_BACKLOG.set(backlog(self.client, self.stream, self.group))
                self.poll(block_ms)
                outage.over()
            except NoSentimentModel as exc:
                log.warning("%s; not consuming until a model is promoted", exc)
                self._stopping.wait(5.0)
            except redis.ConnectionError as exc:
                self._stopping.wait(outage.wait("stream", exc))
            except DATABASE_DOWN as exc:  # what was read stays pending: read again once back
                self._stopping.wait(outage.wait("database", exc))
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                log.warning("consumer group missing (Redis lost its data?); recreating it")
                self.ensure_group()
        return self.stats

    def poll(self, block_ms: int = 1000) -> int:
        """Reclaim or read one batch and process it; returns how many messages were handled."""
        self.ingestor.scorer.served()  # without a model, leave the messages on the stream
        messages = self._reclaim()
        if messages:
            self.stats.reclaimed += len(messages)
        else:
            messages = self._read(block_ms)
        if messages:
            self._process(messages)
        return len(messages)

    # --- reading --------------------------------------------------------------------------

    def _reclaim(self) -> list[_Message]:
        """Messages another (dead) consumer left pending for longer than `claim_idle_ms`."""
        reply = self.client.xautoclaim(
            self.stream, self.group, self.name, self.claim_idle_ms, start_id="0-0", count=self.batch
        )
        return [_Message(mid, fields) for mid, fields in reply[1] if fields is not None]

    def _read(self, block_ms: int) -> list[_Message]:
        reply = self.client.xreadgroup(
            self.group, self.name, {self.stream: ">"}, count=self.batch, block=block_ms
        )
        return [
            _Message(mid, fields) for _stream, entries in reply or [] for mid, fields in entries
        ]

    # --- processing -----------------------------------------------------------------------

    def _process(self, messages: Sequence[_Message]) -> None:
        self.stats.read += len(messages)
        valid: list[tuple[_Message, ArticleIn]] = []
        for message in messages:
            try:
                valid.append((message, _parse(message)))
            except ValueError as exc:  # never an article: no retry helps
                self._dead_letter(message, f"not an article: {exc}", deliveries=1)
        if not valid:
            return
        try:
            self._ingest(valid)
        except (NoSentimentModel, *DATABASE_DOWN):
            raise  # no article's fault: none counts a failed delivery
        except Exception:
            # One bad article must not hold the others back: retry them one at a time.
            log.exception("batch of %d failed; retrying its articles one by one", len(valid))
            self.stats.failed_batches += 1
            for pair in valid:
                try:
                    self._ingest([pair])
                except (NoSentimentModel, *DATABASE_DOWN):
                    raise
                except Exception as exc:
                    self._failed(pair[0], exc)

    def _ingest(self, pairs: Sequence[tuple[_Message, ArticleIn]]) -> None:
        results = self.ingestor.ingest([item for _message, item in pairs])
        # Stored and committed: only now may the messages leave the pending list.
        self.client.xack(self.stream, self.group, *(message.id for message, _item in pairs))
        now_ms = time.time() * 1000
        for message, _item in pairs:  # a stream id starts with its publication time in ms
            STREAM_LAG_SECONDS.observe(max(0.0, now_ms - _stream_id(message.id)[0]) / 1000)
        self.stats.ingested += sum(not r.duplicate for r in results)
        self.stats.duplicates += sum(r.duplicate for r in results)

    def _failed(self, message: _Message, error: Exception) -> None:
        deliveries = self._deliveries(message.id)
        if deliveries >= self.max_deliveries:
            self._dead_letter(message, f"{type(error).__name__}: {error}", deliveries)
        else:
            log.warning(
                "message %s failed (delivery %d of %d): %s",
                message.id, deliveries, self.max_deliveries, error,
            )  # fmt: skip

    def _deliveries(self, message_id: str) -> int:
        pending = self.client.xpending_range(
            self.stream, self.group, min=message_id, max=message_id, count=1
        )
        return int(pending[0]["times_delivered"]) if pending else 1

    def _dead_letter(self, message: _Message, error: str, deliveries: int) -> None:
        try:
            with session_scope(self.factory) as session:
                session.add(
                    DeadLetter(
                        stream=self.stream,
                        message_id=message.id,
                        payload=dict(message.fields),
                        error=error[:4000],
                        deliveries=deliveries,
                    )
                )
        except IntegrityError:
            pass  # recorded by an earlier attempt that died before acknowledging
        self.client.xack(self.stream, self.group, message.id)
        self.stats.dead_lettered += 1
        SENTIMENT_ARTICLES.labels("dead_lettered").inc()
        log.error("dead-lettered stream message %s: %s", message.id, error)


# The database went away (restart, failover, network): waited out, never an article's fault.
DATABASE_DOWN = (OperationalError, InterfaceError)


class _Outage:
    """Waits between tries while a dependency is down: 1 s, doubling to 5 s (an outage's end
    is noticed within seconds: alerts are meant to be); logs when it starts and when it ends,
    not at every try."""

    def __init__(self) -> None:
        self.pause_s = 0.0
        self.since: float | None = None

    def wait(self, what: str, error: Exception) -> float:
        if self.since is None:
            self.since = time.monotonic()
            log.warning("%s unreachable (%s); retrying until it is back", what, error)
        self.pause_s = min(max(self.pause_s * 2, 1.0), 5.0)
        return self.pause_s

    def over(self) -> None:
        if self.since is not None:
            log.warning("reachable again after %.0f s; consuming", time.monotonic() - self.since)
        self.pause_s = 0.0
        self.since = None


def _parse(message: _Message) -> ArticleIn:
    return article_of(message.fields)


def article_of(fields: Mapping[str, str]) -> ArticleIn:
    """The article a stream message's fields carry; `ValueError` saying why when none."""
    raw = fields.get(FIELD)
    if raw is None:
        raise ValueError(f"no {FIELD!r} field (fields: {sorted(fields)})")
    try:
        return ArticleIn.model_validate(strict_json_loads(raw))
    except ValidationError as exc:
        raise ValueError(problems(exc, "article")) from None
    except ValueError as exc:
        raise ValueError(f"not JSON the monitor can store ({exc})") from None
