"""Generic fine-tuning jobs on the gpu queue: a classifier or an encoder from a data file.

The apps train from their own tables through `core.ml.runs`; these jobs serve ML engineers
who bring a CSV/JSONL file (readable by the worker: a shared volume in a cluster).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.jobs import JobContext
from core.ml.packaged import DEFAULT_ENCODER
from core.ml.runs import PromotionPolicy, run_classifier_training
from core.ml.training import LabelledTexts, TrainingArguments
from workers.registry import job_task

MODEL_NAME = r"^[a-z0-9][a-z0-9._-]{0,99}$"


class TrainClassifierParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_name: str = Field(pattern=MODEL_NAME, description="The model line, e.g. 'tickets'")
    data_path: str = Field(description="CSV (with a header) or JSONL file of labelled texts")
    validation_path: str | None = Field(default=None, description="Optional held-out file")
    text_field: str = "text"
    label_field: str = "label"
    base_model: str = DEFAULT_ENCODER
    arguments: dict[str, Any] = Field(default_factory=dict, description="TrainingArguments")
    promotion: PromotionPolicy = PromotionPolicy.IF_NOT_WORSE

    @field_validator("arguments")
    @classmethod
    def _check_arguments(cls, value: dict[str, Any]) -> dict[str, Any]:
        TrainingArguments.from_dict(value)
        return value

    @field_validator("data_path", "validation_path")
    @classmethod
    def _check_suffix(cls, value: str | None) -> str | None:
        if value is not None and Path(value).suffix.lower() not in (".csv", ".jsonl"):
            raise ValueError(f"expected a .csv or .jsonl file, got {value!r}")
        return value


def read_labelled(path: str, text_field: str, label_field: str) -> LabelledTexts:
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"data file {source} does not exist on this worker")
    return LabelledTexts.from_file(source, text_field, label_field)


@job_task("core.train_classifier", queue="gpu", max_retries=0, params=TrainClassifierParams)
def train_classifier_job(ctx: JobContext) -> dict[str, Any]:
    """Fine-tune a text classifier from a file and record it as a new model version."""
    params = TrainClassifierParams.model_validate(ctx.params)
    ctx.progress(0.0, "reading data")
    data = read_labelled(params.data_path, params.text_field, params.label_field)
    validation = (
        read_labelled(params.validation_path, params.text_field, params.label_field)
        if params.validation_path
        else None
    )
    outcome = run_classifier_training(
        ctx.settings,
        ctx.session_factory,
        model_name=params.model_name,
        base_reference=params.base_model,
        data=data,
        arguments=TrainingArguments.from_dict(params.arguments),
        validation=validation,
        job_id=ctx.job_id,
        progress=ctx.progress,
        promotion=params.promotion,
    )
    return outcome.as_result()
