"""What every textsuite run configures the same way in a transformers `Trainer`: device and
mixed precision from the `Placement`, seeds, quiet logging, and a scratch folder for
checkpoints that never ends up in the model folder."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from transformers import PrinterCallback, Trainer
from transformers import TrainingArguments as HFTrainingArguments

from core.ml.device import Placement, choose_placement
from core.ml.training.arguments import LOWER_IS_BETTER


def placement_or_default(placement: Placement | None) -> Placement:
    return placement if placement is not None else choose_placement()


@contextmanager
def checkpoint_folder(output_dir: Path) -> Iterator[Path]:
    """A scratch folder beside `output_dir` (same disk, which has room for the model) that is
    removed afterwards, so only the final model is kept."""
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(
        tempfile.mkdtemp(prefix=f".{output_dir.name}-checkpoints-", dir=output_dir.parent)
    )
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def hf_arguments(
    scratch: Path,
    placement: Placement,
    *,
    epochs: float,
    learning_rate: float,
    batch_size: int,
    gradient_accumulation_steps: int,
    weight_decay: float,
    warmup_ratio: float,
    seed: int,
    max_steps: int | None,
    evaluate: bool = False,
    eval_steps: int | None = None,
    metric_for_best_model: str | None = None,
    **extra: Any,
) -> HFTrainingArguments:
    """transformers `TrainingArguments` for one run.

    With `evaluate`, the model is evaluated (and checkpointed) every epoch or `eval_steps`, and
    the best checkpoint by `metric_for_best_model` is loaded at the end.
    """
    interval = "no"
    if evaluate:
        interval = "steps" if eval_steps else "epoch"
    lower_is_better = metric_for_best_model in LOWER_IS_BETTER
    return HFTrainingArguments(
        output_dir=str(scratch),
        num_train_epochs=epochs,
        max_steps=max_steps if max_steps else -1,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=max(batch_size, 32),
        gradient_accumulation_steps=gradient_accumulation_steps,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        warmup_steps=warmup_ratio,  # a float below 1 is a share of all steps
        lr_scheduler_type="linear",
        eval_strategy=interval,
        save_strategy=interval,
        eval_steps=eval_steps,
        save_steps=eval_steps,
        save_total_limit=1,
        save_only_model=True,
        load_best_model_at_end=evaluate,
        metric_for_best_model=metric_for_best_model if evaluate else None,
        greater_is_better=not lower_is_better if evaluate else None,
        logging_strategy="steps",
        logging_steps=10,
        report_to="none",
        disable_tqdm=True,
        seed=seed,
        data_seed=seed,
        bf16=placement.mixed_precision == "bf16",
        fp16=placement.mixed_precision == "fp16",
        use_cpu=placement.device.type == "cpu",
        dataloader_num_workers=0,
        **extra,
    )


def quiet(trainer: Trainer) -> Trainer:
    """Drop the callback that prints every log line: progress goes to the caller instead."""
    trainer.remove_callback(PrinterCallback)
    return trainer
