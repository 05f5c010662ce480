"""The sentiment monitor's settings: `TEXTSUITE_SENTIMENT_*` variables (and `.env`)."""

from __future__ import annotations

import functools
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.settings import load_app_settings

MIN_RETENTION_DAYS = 8.0


class SentimentSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TEXTSUITE_SENTIMENT_",
        env_file=".env",
        extra="ignore",
        frozen=True,
        allow_inf_nan=False,
    )

    model_name: str = Field(
        default="sentiment", description="Model versions of the finance sentiment classifier."
    )
    base_model: str = Field(default="all-MiniLM-L6-v2", description="Encoder to fine-tune.")
    stream_url: str | None = Field(
        default=None,
        description="Redis URL of the ingest stream; unset: articles are scored in-process.",
    )
    stream_name: str = Field(default="textsuite:articles", description="Redis stream key.")
    stream_group: str = Field(default="sentiment-scorers", description="Consumer group.")
    stream_batch: Annotated[int, Field(ge=1, le=4096)] = Field(
        default=128, description="Messages a consumer reads and scores at a time."
    )
    stream_claim_idle_ms: Annotated[int, Field(ge=1000)] = Field(
        default=60_000,
        description="Reclaim messages another consumer left pending this long (XAUTOCLAIM).",
    )
    stream_max_deliveries: Annotated[int, Field(ge=1)] = Field(
        default=5, description="Dead-letter a message after this many failed deliveries."
    )
    stream_max_backlog: Annotated[int, Field(ge=100)] = Field(
        default=100_000,
        description="Refuse new articles (503) while this many wait unscored on the stream.",
    )
    stream_require_durable: bool = Field(
        default=False,
        description="Refuse articles (503) unless the stream's Redis writes an append-only file.",
    )

    retention_days: Annotated[float, Field(ge=0, le=36_500)] = Field(
        default=0.0,
        description=f"Delete articles published more than this many days ago (at least "
        f"{MIN_RETENTION_DAYS:g}: the alert baselines read the last week), except those analysts "
        "relabelled; 0: keep them.",
    )
    retrain_every_h: Annotated[float, Field(ge=0, le=87_600)] = Field(
        default=0.0,
        description="Retrain the sentiment model this often when its training data changed "
        "(articles analysts relabelled), promoted only if not worse; 0: only when asked.",
    )
    feed_poll_s: Annotated[float, Field(ge=0)] = Field(
        default=300.0,
        description="Every service process polls the RSS/Atom feeds due this often (each feed "
        "by one process at a time, whatever their number); 0: only `textsuite sentiment poll` "
        "and `POST .../feeds/{id}/poll` do.",
    )
    notify_timeout_s: Annotated[float, Field(gt=0, le=300)] = Field(
        default=10.0,
        description="Give up on a webhook target that has not answered in this long (the "
        "notification job retries it with backoff).",
    )

    @field_validator("stream_url")
    @classmethod
    def _check_stream_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"expected a redis:// URL, got {value!r}")
        return value

    @field_validator("retention_days")
    @classmethod
    def _check_retention(cls, value: float) -> float:
        if 0 < value < MIN_RETENTION_DAYS:
            raise ValueError(
                f"keep articles at least {MIN_RETENTION_DAYS:g} days (the alert baselines read "
                "the last week), or 0 to keep them all"
            )
        return value


def load_sentiment_settings(**overrides: object) -> SentimentSettings:
    return load_app_settings(SentimentSettings, "TEXTSUITE_SENTIMENT_", **overrides)


@functools.lru_cache(maxsize=1)
def get_sentiment_settings() -> SentimentSettings:
    return load_sentiment_settings()
