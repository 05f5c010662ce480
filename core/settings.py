"""One typed `Settings` for the whole suite, read from `TEXTSUITE_*` variables and `.env`."""

from __future__ import annotations

import functools
import os
import re
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as UnparsableSetting

if TYPE_CHECKING:
    from core.ml.batching import BatchingConfig

ENV_PREFIX = "TEXTSUITE_"


class SettingsError(RuntimeError):
    """Raised at start-up when a `TEXTSUITE_*` variable holds a value that cannot be used."""


class LogFormat(StrEnum):
    JSON = "json"
    CONSOLE = "console"


class Scheduler(StrEnum):
    """Where the periodic work runs (resolving quiet alerts, polling feeds, sending again
    lost jobs, scheduled retraining)."""

    API = "api"  # every API process, side by side: nothing more to run
    BEAT = "beat"  # `textsuite beat` queues it as tasks for the `default` workers


class Settings(BaseSettings):
    """Everything that can be configured, with the defaults of the embedded setup.

    The defaults need nothing installed: a SQLite file under `./var/` and jobs run in-process.
    Production sets a PostgreSQL `database_url` and a Redis `broker_url`.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        allow_inf_nan=False,
    )

    database_url: str = Field(
        default="sqlite:///var/textsuite.db",
        description="SQLAlchemy URL of the database (PostgreSQL in production, SQLite embedded).",
    )
    broker_url: str | None = Field(
        default=None,
        description="Redis URL of the Celery broker; unset runs jobs in-process.",
    )
    var_dir: Path = Field(default=Path("var"), description="Where local state lives.")
    model_cache_dir: Path = Field(
        default=Path("var/models"), description="Converted and downloaded model files."
    )
    artifacts_dir: Path = Field(
        default=Path("var/artifacts"), description="Fine-tuned model versions."
    )
    data_dir: Path = Field(
        default=Path("../shared/data"), description="Public data sets for training and benchmarks."
    )
    device: str = Field(
        default="auto", description="Where models run: auto (cuda > mps > cpu), cuda, mps, cpu."
    )
    dtype: str = Field(
        default="auto",
        description="Precision models serve in: auto (bf16/fp16 on GPU; bf16 on CPUs that "
        "multiply it natively, AMX or AVX512-BF16, else fp32), float32, bfloat16, float16. "
        "Training keeps fp32 weights.",
    )
    training_precision: str = Field(
        default="auto",
        description="Precision training autocasts to: auto (as models serve: bf16 on GPUs that "
        "support it, else fp16; on CPUs bf16 when the dtype is bf16, else none), fp32, bf16, "
        "fp16 (CUDA only). Weights are trained and saved in fp32 whatever it is.",
    )
    bootstrap_api_key: SecretStr | None = Field(
        default=None,
        description="An admin API key ensured (hashed) at start-up, for first access.",
    )
    host: str = Field(default="127.0.0.1", description="Address `textsuite serve` binds.")
    port: Annotated[int, Field(ge=1, le=65535)] = Field(
        default=8000, description="Port `textsuite serve` listens on."
    )
    log_level: str = Field(default="INFO", description="Python logging level.")
    log_format: LogFormat = Field(default=LogFormat.CONSOLE, description="`json` or `console`.")
    max_request_bytes: Annotated[int, Field(gt=0)] = Field(
        default=1_048_576, description="Largest accepted request body (file imports aside)."
    )
    max_import_bytes: Annotated[int, Field(gt=0)] = Field(
        default=67_108_864, description="Largest accepted file import (`POST .../import`)."
    )
    rate_limit_per_s: Annotated[float, Field(ge=0)] = Field(
        default=200.0,
        description="Requests per second one API key may make to one API process, with bursts "
        "of twice that; over it, 429 with Retry-After. 0: no limit. A key's own limit "
        "(`textsuite keys create --rate-limit`) overrides it.",
    )
    api_key_cache_s: Annotated[float, Field(ge=0, le=300)] = Field(
        default=5.0,
        description="How long a process trusts a key it has checked (a revoked key stops "
        "working within this time); 0 checks the database on every request.",
    )
    job_time_limit_s: Annotated[int, Field(gt=0)] = Field(
        default=4 * 3600, description="Hard time limit of one job; the longest job must fit."
    )
    broker_visibility_timeout_s: Annotated[int, Field(gt=0)] = Field(
        default=5 * 3600,
        description="Redis redelivers an unacknowledged job after this; above the time limit.",
    )
    job_lease_s: Annotated[int, Field(gt=0)] = Field(
        default=120,
        description="A running job whose heartbeat is older than this is presumed dead.",
    )
    job_redispatch_after_s: Annotated[float, Field(ge=0)] = Field(
        default=600.0,
        description="The API sends again jobs queued this long, or running without a heartbeat "
        "this long, whose message a broker restart or a dead process may have lost; 0: never.",
    )
    scheduler: Scheduler = Field(
        default=Scheduler.API,
        description="Where the periodic work runs: `api` (in every API process) or `beat` "
        "(queued by `textsuite beat` for the workers; needs a broker).",
    )
    inprocess_job_threads: Annotated[int, Field(ge=1, le=64)] = Field(
        default=2, description="Threads running jobs when no broker is configured."
    )
    serve_int8: bool = Field(
        default=False,
        description="Serve fine-tuned encoders through ONNX Runtime int8 (exported once per "
        "version, next to it): about twice the CPU throughput at the same accuracy.",
    )
    batch_max_size: Annotated[int, Field(ge=1, le=4096)] = Field(
        default=32, description="Rows per model call when serving (the dynamic batcher)."
    )
    batch_max_tokens: Annotated[int, Field(ge=1)] = Field(
        default=8192, description="Padded tokens per model call when serving."
    )
    batch_max_wait_ms: Annotated[float, Field(ge=0, le=1000)] = Field(
        default=5.0, description="How long a request may wait for others to share its call."
    )
    batch_max_queue: Annotated[int, Field(ge=1)] = Field(
        default=1024, description="Requests queued per model before 503 + Retry-After."
    )
    worker_imports: list[str] = Field(
        default_factory=list,
        description="Extra modules with task definitions that workers import (JSON list).",
    )

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(value)
        except ArgumentError as exc:
            raise ValueError(f"not a SQLAlchemy URL: {value!r} ({exc})") from None
        if url.get_backend_name() not in {"sqlite", "postgresql"}:
            raise ValueError(
                f"unsupported database {url.get_backend_name()!r}: use postgresql+psycopg://... "
                "or sqlite:///path.db"
            )
        return value

    @field_validator("broker_url")
    @classmethod
    def _check_broker_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not value.startswith(("redis://", "rediss://")):
            raise ValueError(f"expected a redis:// or rediss:// URL, got {value!r}")
        return value

    @field_validator("bootstrap_api_key")
    @classmethod
    def _key_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        """Refused here, naming the setting, not later as a start-up traceback; empty is
        unset (`TEXTSUITE_BOOTSTRAP_API_KEY=`)."""
        from core.security import MIN_KEY_LENGTH

        if value is not None and not value.get_secret_value().strip():
            return None
        if value is not None and len(value.get_secret_value()) < MIN_KEY_LENGTH:
            raise ValueError(
                f"an API key needs at least {MIN_KEY_LENGTH} characters, got "
                f"{len(value.get_secret_value())} (`textsuite keys create` makes one)"
            )
        return value

    @field_validator("var_dir", "model_cache_dir", "artifacts_dir", "data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        # Model versions store the folder they were saved to: relative to one process's
        # working directory it would mean another folder to the next process (or machine).
        # Not `resolve()`: a link (a mount point's alias) must stay the path other machines use.
        return Path(os.path.abspath(value.expanduser()))

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if value not in ("auto", "cuda", "mps", "cpu") and not value.startswith("cuda:"):
            raise ValueError(f"unknown device {value!r}; expected auto, cuda, cuda:N, mps or cpu")
        return value

    @field_validator("dtype")
    @classmethod
    def _check_dtype(cls, value: str) -> str:
        if value not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"unknown dtype {value!r}; expected auto, float32, bfloat16, float16")
        return value

    @field_validator("training_precision")
    @classmethod
    def _check_training_precision(cls, value: str) -> str:
        if value not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(
                f"unknown training precision {value!r}; expected auto, fp32, bf16 or fp16"
            )
        return value

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        levels = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
        if value.upper() not in levels:
            raise ValueError(f"unknown log level {value!r}; expected one of {', '.join(levels)}")
        return value.upper()

    @model_validator(mode="after")
    def _check_timeouts(self) -> Settings:
        if self.broker_visibility_timeout_s <= self.job_time_limit_s:
            raise ValueError(
                "TEXTSUITE_BROKER_VISIBILITY_TIMEOUT_S must be above TEXTSUITE_JOB_TIME_LIMIT_S "
                f"({self.broker_visibility_timeout_s} <= {self.job_time_limit_s}), or Redis "
                "hands a still-running job to a second worker"
            )
        if self.scheduler is Scheduler.BEAT and self.broker_url is None:
            raise ValueError(
                "scheduler 'beat' queues the periodic work for workers, which needs a broker: "
                "set TEXTSUITE_BROKER_URL, or leave TEXTSUITE_SCHEDULER at 'api'"
            )
        return self

    def batching(self) -> BatchingConfig:
        """The serving batcher's limits (`TEXTSUITE_BATCH_*`)."""
        from core.ml.batching import BatchingConfig

        return BatchingConfig(
            max_batch_size=self.batch_max_size,
            max_batch_tokens=self.batch_max_tokens,
            max_wait_ms=self.batch_max_wait_ms,
            max_queue=self.batch_max_queue,
        )

    @property
    def jobs_inprocess(self) -> bool:
        """True when no broker is configured and jobs run in this process."""
        return self.broker_url is None


def _describe(error: Any, prefix: str = ENV_PREFIX) -> str:
    """One configuration error, named by its variable (a rule across several variables, such
    as a lowest value above a highest, by its own message)."""
    if not error["loc"]:
        return str(error["msg"]).removeprefix("Value error, ")
    return f"{prefix}{str(error['loc'][0]).upper()}: {error['msg']}"


def _unparsable(exc: UnparsableSetting, prefix: str) -> SettingsError:
    """pydantic-settings' error for a list or object setting that is not JSON, which names a
    field and a source: as the others, by its variable."""
    found = re.search(r'field "(\w+)"', str(exc))
    name = f"{prefix}{found.group(1).upper()}" if found else "a setting"
    return SettingsError(
        f"invalid configuration:\n  {name}: not valid JSON (a list is written "
        '["a", "b"], an object {"a": 1})'
    )


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment; a bad value raises `SettingsError` naming it."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = "\n  ".join(_describe(error) for error in exc.errors())
        raise SettingsError(f"invalid configuration:\n  {lines}") from None
    except UnparsableSetting as exc:
        raise _unparsable(exc, ENV_PREFIX) from None


S = TypeVar("S", bound=BaseSettings)


def load_app_settings(cls: type[S], prefix: str, **overrides: Any) -> S:
    """An app's own settings class (`prefix` = its variables' prefix), errors as above."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        lines = "\n  ".join(_describe(error, prefix) for error in exc.errors())
        raise SettingsError(f"invalid configuration:\n  {lines}") from None
    except UnparsableSetting as exc:
        raise _unparsable(exc, prefix) from None


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once on first use (never at import)."""
    return load_settings()
