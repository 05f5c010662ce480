"""What a training run is asked to do (dataclasses) and what it produced (`TrainingResult`).

Arguments only describe; the trainers in `classification`, `fewshot` and `embedding` run them.
Every field is JSON-serialisable so a run's parameters can be stored with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, with_config

Strategy = Literal["auto", "full", "lora", "fewshot", "sentence"]
STRATEGIES: tuple[str, ...] = ("auto", "full", "lora", "fewshot", "sentence")
Augmentation = Literal["none", "word_dropout", "neighbours"]
AUGMENTATIONS: tuple[str, ...] = ("none", "word_dropout", "neighbours")
# Validation metrics a run can select its best checkpoint by (and versions be compared on).
SELECTION_METRICS: tuple[str, ...] = ("macro_f1", "accuracy", "weighted_f1", "nll", "ece", "loss")
LOWER_IS_BETTER = frozenset({"nll", "ece", "loss"})

# The learning rates each strategy is usually trained with: LoRA adapters need a larger step
# than full fine-tuning, and the few-shot encoder a smaller one (SetFit's default body rate).
DEFAULT_LEARNING_RATES = {"full": 5e-5, "lora": 2e-4, "fewshot": 2e-5, "sentence": 2e-5}


A = TypeVar("A")
# Read from JSON (job parameters), each field's type checked and no field unknown.
FROM_JSON = ConfigDict(extra="forbid")

# Bounds of the numbers a run takes (checked when arguments are read from JSON): a run of
# -1 epochs trained nothing and could still be promoted.
Positive = Annotated[float, Field(gt=0)]
AtLeastOne = Annotated[int, Field(ge=1)]
NonNegative = Annotated[float, Field(ge=0)]
Share = Annotated[float, Field(ge=0, lt=1)]  # a probability or a fraction of a whole
Seed = Annotated[int, Field(ge=0, lt=2**32)]  # what numpy and torch take


def arguments_from_dict(cls: type[A], values: Mapping[str, Any]) -> A:
    """`cls` (an arguments dataclass) from JSON, such as a job's parameters: every value
    type-checked and every problem named, so a bad one is refused before a job is queued."""
    try:
        return TypeAdapter(cls).validate_python(dict(values))
    except ValidationError as exc:
        problems, unknown = [], False
        for error in exc.errors():
            place = ".".join(str(part) for part in error["loc"])
            if error["type"] == "unexpected_keyword_argument":
                unknown = unknown or len(error["loc"]) == 1  # a nested one names its own
                problems.append(f"unknown argument {place!r}")
            else:
                message = error["msg"].removeprefix("Value error, ")
                problems.append(f"{place}: {message}" if place else message)
        if unknown:
            known = ", ".join(sorted(f.name for f in fields(cls)))
            problems.append(f"known arguments: {known}")
        raise ValueError("; ".join(problems)) from None


@with_config(FROM_JSON)
@dataclass
class LoraArguments:
    """LoRA adapter shape (peft). `target_modules=None` uses peft's defaults for the model type
    (e.g. `q_proj`/`v_proj` for Llama, `query`/`value` for BERT)."""

    r: AtLeastOne = 16
    alpha: AtLeastOne = 32
    dropout: Share = 0.05
    # Module names, or one string as peft takes it: "all-linear", or a regular expression.
    target_modules: list[str] | str | None = None


@with_config(FROM_JSON)
@dataclass
class TrainingArguments:
    """A classification run: sentence head, full fine-tuning, LoRA, or few-shot (SetFit-style).

    `strategy="auto"` picks LoRA for decoder (Llama-family) bases, the sentence head for
    sentence encoders, full fine-tuning otherwise (`choose_strategy`).
    `learning_rate=None` takes the strategy's usual rate (`DEFAULT_LEARNING_RATES`).
    """

    strategy: Strategy = "auto"
    epochs: Positive = 10.0
    learning_rate: Positive | None = None
    batch_size: AtLeastOne = 16
    gradient_accumulation_steps: AtLeastOne = 1
    weight_decay: NonNegative = 0.01
    warmup_ratio: Share = 0.1
    # Overrides the model's dropout probabilities (hidden, attention, classifier) when set.
    dropout: Share | None = None
    seed: Seed = 42
    # Share of each class held out for early stopping, calibration and metrics (stratified).
    # 0 trains on everything: no early stopping, temperature 1, no validation metrics.
    validation_fraction: float = 0.2
    # Evaluations without improvement before stopping; None or 0: never stop early.
    early_stopping_patience: Annotated[int, Field(ge=0)] | None = 3
    metric_for_best_model: str = "macro_f1"
    # Weight the loss by inverse class frequency ("balanced"), for imbalanced data.
    class_weights: bool = False
    max_length: AtLeastOne = 128
    lora: LoraArguments | None = None
    max_steps: AtLeastOne | None = None
    # Evaluate (and maybe stop) every this many steps; None = once per epoch.
    eval_steps: AtLeastOne | None = None
    # Few-shot: each training example takes part in this many positive and as many negative
    # pairs (SetFit's `num_iterations`); the encoder is trained for `fewshot_epochs` over them.
    fewshot_pairs_per_example: AtLeastOne = 20
    fewshot_epochs: Positive = 1.0
    # Inverse regularisation strength of the few-shot logistic-regression head (sklearn `C`).
    fewshot_head_c: Positive = 1.0
    # `sentence`: `C` of the logistic regression that initialises the head, and how much
    # faster than the encoder the head learns afterwards.
    head_c: Positive = 10.0
    head_lr_multiplier: Positive = 20.0
    # Regularisers, off by default (see `core.ml.training.regularisers` for what each did on
    # the benchmarks). Adversarial training (FGM) on the input embeddings, for the strategies
    # trained with cross-entropy (sentence, full, lora): each step also trains on the texts'
    # word embeddings moved by this L2 distance (per text) the way that raises the loss most.
    adversarial_epsilon: float = 0.0
    # Text augmentation of the training split (never the validation split): `augment_copies`
    # altered copies of each text, each word dropped ("word_dropout") or replaced by one of
    # its nearest words in the base model's input-embedding space ("neighbours") with
    # probability `augment_rate`.
    augment: Augmentation = "none"
    augment_copies: int = 1
    augment_rate: float = 0.1

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"unknown strategy {self.strategy!r}; expected one of {', '.join(STRATEGIES)}"
            )
        if self.augment not in AUGMENTATIONS:
            raise ValueError(
                f"unknown augment {self.augment!r}; expected one of {', '.join(AUGMENTATIONS)}"
            )
        if not 0.0 < self.augment_rate <= 1.0 or self.augment_copies < 1:
            raise ValueError(
                "augment_rate must be in (0, 1] and augment_copies at least 1, got "
                f"{self.augment_rate} and {self.augment_copies}"
            )
        if self.adversarial_epsilon < 0:
            raise ValueError(f"adversarial_epsilon must be >= 0, got {self.adversarial_epsilon}")
        if self.metric_for_best_model not in SELECTION_METRICS:
            raise ValueError(
                f"unknown metric_for_best_model {self.metric_for_best_model!r}; expected one of "
                f"{', '.join(SELECTION_METRICS)}"
            )
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(
                f"validation_fraction must be in [0, 1), got {self.validation_fraction}"
            )
        if self.batch_size < 1 or self.gradient_accumulation_steps < 1:
            raise ValueError("batch_size and gradient_accumulation_steps must be at least 1")
        if isinstance(self.lora, dict):  # arguments read back from stored JSON
            self.lora = LoraArguments(**self.lora)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainingArguments:
        """Arguments from JSON (a job's parameters), checked (`arguments_from_dict`)."""
        return arguments_from_dict(cls, values)

    def learning_rate_for(self, strategy: str) -> float:
        return (
            self.learning_rate
            if self.learning_rate is not None
            else DEFAULT_LEARNING_RATES[strategy]
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@with_config(FROM_JSON)
@dataclass
class EmbeddingTrainingArguments:
    """Contrastive fine-tuning of a sentence encoder on (anchor, positive) pairs, with the
    other positives in a batch as negatives (MultipleNegativesRankingLoss): larger batches give
    more negatives per step."""

    epochs: Positive = 1.0
    # None: 2e-5 for the whole model, 2e-4 with LoRA (`learning_rate_used`).
    learning_rate: Positive | None = None
    batch_size: AtLeastOne = 32
    gradient_accumulation_steps: AtLeastOne = 1
    weight_decay: NonNegative = 0.01
    warmup_ratio: Share = 0.1
    seed: Seed = 42
    # Share of pairs held out to measure retrieval (accuracy@1, MRR) before and after.
    validation_fraction: float = 0.1
    max_length: AtLeastOne = 128
    max_steps: AtLeastOne | None = None
    # Similarity scale of MultipleNegativesRankingLoss (sentence-transformers' default).
    scale: Positive = 20.0
    # LoRA adapters instead of tuning every weight (large decoder encoders on a GPU); they are
    # merged into the saved model, which serves as any other encoder.
    lora: LoraArguments | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(
                f"validation_fraction must be in [0, 1), got {self.validation_fraction}"
            )
        if isinstance(self.lora, dict):  # arguments read back from stored JSON
            self.lora = LoraArguments(**self.lora)

    @property
    def learning_rate_used(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return DEFAULT_LEARNING_RATES["lora" if self.lora else "sentence"]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> EmbeddingTrainingArguments:
        """Arguments from JSON (a job's parameters), checked (`arguments_from_dict`)."""
        return arguments_from_dict(cls, values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainingResult:
    """A finished run: the model folder (textsuite artifact contract), its labels, validation
    metrics (JSON-serialisable) with the one used to compare versions, and the parameters."""

    output_dir: Path
    architecture: str
    labels: list[str]
    metrics: dict[str, Any]
    primary_metric: str
    params: dict[str, Any] = field(default_factory=dict)
