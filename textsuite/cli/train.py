"""`textsuite train`: fine-tuning jobs, followed with a progress bar."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from textsuite.cli.common import fail
from textsuite.cli.jobs import submit_and_follow

app = typer.Typer(help="Fine-tune models (runs as a job on the gpu queue).", no_args_is_help=True)


StrategyOption = Annotated[
    str, typer.Option(help="auto, sentence, full, lora or fewshot (auto: by architecture)")
]
EpochsOption = Annotated[float | None, typer.Option(help="Training epochs")]
ArgumentsOption = Annotated[
    str | None, typer.Option(help="More TrainingArguments as JSON, e.g. '{\"seed\": 7}'")
]
PromotionOption = Annotated[str, typer.Option(help="if-not-worse, never or force")]
WaitOption = Annotated[bool, typer.Option(help="Follow the job until it finishes")]


def _json_arguments(arguments: str | None) -> dict:
    try:
        extra = json.loads(arguments) if arguments else {}
    except json.JSONDecodeError as exc:
        fail(f"--arguments is not JSON: {exc.msg}")
    if not isinstance(extra, dict):
        fail("--arguments must be a JSON object")
    return extra


def training_arguments(strategy: str, epochs: float | None, arguments: str | None) -> dict:
    """The job's TrainingArguments from the common options (checked again by the job)."""
    extra = _json_arguments(arguments)
    extra["strategy"] = strategy
    if epochs is not None:
        extra["epochs"] = epochs
    return extra


@app.command()
def classifier(
    data: Annotated[Path, typer.Option(help="Labelled texts: CSV with a header, or JSONL")],
    name: Annotated[str, typer.Option(help="Model name, e.g. 'tickets'")],
    base: Annotated[str, typer.Option(help="Base model reference")] = "all-MiniLM-L6-v2",
    validation: Annotated[Path | None, typer.Option(help="Held-out file (same format)")] = None,
    text_field: Annotated[str, typer.Option(help="Column/key holding the text")] = "text",
    label_field: Annotated[str, typer.Option(help="Column/key holding the label")] = "label",
    strategy: StrategyOption = "auto",
    epochs: EpochsOption = None,
    arguments: ArgumentsOption = None,
    promotion: PromotionOption = "if-not-worse",
    wait: WaitOption = True,
) -> None:
    """Fine-tune a text classifier and record it as a new version of NAME."""
    params = {
        "model_name": name,
        "data_path": str(data.resolve()),
        "validation_path": str(validation.resolve()) if validation else None,
        "text_field": text_field,
        "label_field": label_field,
        "base_model": base,
        "arguments": training_arguments(strategy, epochs, arguments),
        "promotion": promotion,
    }
    submit_and_follow("core.train_classifier", params, wait)


@app.command()
def sentiment(
    strategy: StrategyOption = "auto",
    epochs: EpochsOption = None,
    arguments: ArgumentsOption = None,
    twitter: Annotated[
        bool, typer.Option(help="Train on the Twitter financial news set (data directory)")
    ] = True,
    demo: Annotated[bool, typer.Option(help="Train on the project's own headlines")] = True,
    extra: Annotated[
        Path | None, typer.Option(help="More labelled headlines: CSV text,label")
    ] = None,
    corrections: Annotated[
        bool, typer.Option(help="Train on the articles analysts relabelled")
    ] = True,
    promotion: PromotionOption = "if-not-worse",
    wait: WaitOption = True,
) -> None:
    """Train the finance sentiment model (negative / neutral / positive)."""
    params = {
        "arguments": training_arguments(strategy, epochs, arguments),
        "promotion": promotion,
        "include_twitter": twitter,
        "include_demo": demo,
        "extra_path": str(extra.resolve()) if extra else None,
        "include_corrections": corrections,
    }
    submit_and_follow("sentiment.train", params, wait)


@app.command()
def support(
    strategy: StrategyOption = "auto",
    epochs: EpochsOption = None,
    arguments: ArgumentsOption = None,
    promotion: PromotionOption = "if-not-worse",
    wait: WaitOption = True,
) -> None:
    """Retrain the support bot's intent model on its catalogue (and reviewed messages)."""
    training = training_arguments(strategy, epochs, arguments)
    submit_and_follow("support.train", {"arguments": training, "promotion": promotion}, wait)


@app.command()
def recommend(
    epochs: EpochsOption = None,
    arguments: Annotated[
        str | None,
        typer.Option(help="EmbeddingTrainingArguments as JSON, e.g. '{\"batch_size\": 64}'"),
    ] = None,
    days: Annotated[int, typer.Option(min=1, help="Events from this many days back")] = 180,
    max_pairs: Annotated[int, typer.Option(min=2, help="The most common item pairs kept")] = 20_000,
    promotion: PromotionOption = "if-not-worse",
    wait: WaitOption = True,
) -> None:
    """Tune the recommender's item encoder on behaviour (items the same users engage with),
    then embed the catalogue with it."""
    extra = _json_arguments(arguments)
    if epochs is not None:
        extra["epochs"] = epochs
    params = {"arguments": extra, "promotion": promotion, "days": days, "max_pairs": max_pairs}
    submit_and_follow("recommend.train", params, wait)
