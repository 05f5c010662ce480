"""Training progress reported to a caller (the job system stores it) from inside a Trainer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState
from transformers import TrainingArguments as HFTrainingArguments

ProgressFn = Callable[[float, str | None], None]


def report(progress: ProgressFn | None, fraction: float, message: str | None = None) -> None:
    if progress is not None:
        progress(min(max(fraction, 0.0), 1.0), message)


class ProgressCallback(TrainerCallback):
    """Maps Trainer steps onto `[start, start + span]` of the whole job's progress.

    Reports at most every 1% (plus every evaluation), so a job record is not rewritten on each
    of thousands of steps.
    """

    def __init__(self, progress: ProgressFn | None, start: float = 0.0, span: float = 1.0) -> None:
        self.progress = progress
        self.start = start
        self.span = span
        self._last = -1.0

    def _fraction(self, state: TrainerState) -> float:
        done = state.global_step / state.max_steps if state.max_steps else 0.0
        return self.start + self.span * done

    def on_step_end(
        self,
        args: HFTrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        fraction = self._fraction(state)
        if fraction - self._last >= 0.01:
            self._last = fraction
            epoch = f"epoch {state.epoch:.2f}" if state.epoch is not None else "training"
            report(self.progress, fraction, f"{epoch}, step {state.global_step}/{state.max_steps}")

    def on_evaluate(
        self,
        args: HFTrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        shown = ", ".join(
            f"{key.removeprefix('eval_')} {value:.4f}"
            for key, value in (metrics or {}).items()
            if key in ("eval_loss", f"eval_{args.metric_for_best_model}")
        )
        report(self.progress, self._fraction(state), f"validation: {shown}")
