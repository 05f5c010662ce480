"""Fine-tuning benchmark: Banking77 intents with the default encoder (all-MiniLM-L6-v2).

Two settings — the full training set, and 10 examples per intent (a seeded sample) — each
trained with `core.ml.training.train_classifier` as the product runs it (strategy `auto`:
full fine-tuning on the full set, few-shot at 10 per intent), beside a baseline computed in
the same run: logistic regression on frozen MiniLM embeddings (C chosen by 5-fold CV). Prints
test accuracy, macro-F1 and training wall time with ratios to the baseline.

textsuite holds out `--validation-fraction` of each intent for early stopping and calibration;
the baseline trains on every example. `--unlabelled-rest` adds self-training at 10 per intent:
the other training sentences, labels dropped, are pseudo-labelled by the latest model where it
is at least `--min-confidence` sure, for `--self-training-rounds` rounds
(`core.ml.training.self_training`). `--quick` is a smoke run on a few intents (about a
minute): its numbers say the benchmark works, not how well the models do.

    .venv/bin/python -m bench.finetune [--quick] [--settings full,10-shot]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from bench.common import REPO_ROOT, load_banking77, product_placement

if TYPE_CHECKING:
    from core.ml.device import Placement
    from core.ml.training import LabelledTexts, TrainingArguments

DESCRIPTIONS = Path(__file__).with_name("banking77_descriptions.yaml")

PUBLISHED = {
    "full": "published: BERT-large 93.66, USE+ConveRT 93.36 (Casanueva et al. 2020)",
    "10-shot": "published: USE+ConveRT 85.19, CPFT 87.20, ICDA 89.79",
}


@dataclass
class Row:
    setting: str
    method: str
    strategy: str
    n_train: int
    n_test: int
    accuracy: float
    macro_f1: float
    train_seconds: float


def only_intents(data: LabelledTexts, intents: set[str]) -> LabelledTexts:
    return data.subset([i for i, label in enumerate(data.labels) if label in intents])


def frozen_baseline(
    setting: str,
    encoder_folder: Path,
    train: LabelledTexts,
    test: LabelledTexts,
    placement: Placement,
) -> Row:
    """Logistic regression on frozen sentence embeddings; C picked by cross-validation."""
    from sklearn.linear_model import LogisticRegressionCV

    from core.ml.evaluation import classification_metrics, label_ids_for
    from core.ml.loading import load_encoder

    labels = train.label_names
    started = time.perf_counter()
    encoder = load_encoder(encoder_folder, placement)
    head = LogisticRegressionCV(Cs=[0.1, 1.0, 10.0, 100.0], cv=5, max_iter=3000)
    head.fit(encoder.encode(train.texts), label_ids_for(train.labels, labels))
    seconds = time.perf_counter() - started
    probabilities = head.predict_proba(encoder.encode(test.texts))
    metrics = classification_metrics(label_ids_for(test.labels, labels), probabilities, labels)
    return Row(
        setting,
        "frozen MiniLM + logistic regression (baseline)",
        f"C={float(head.C_[0]):g}",
        len(train),
        len(test),
        metrics["accuracy"],
        metrics["macro_f1"],
        seconds,
    )


def textsuite_run(
    setting: str,
    base: Path,
    train: LabelledTexts,
    test: LabelledTexts,
    args: TrainingArguments,
    workdir: Path,
    placement: Placement,
) -> Row:
    """`train_classifier` as the product calls it, scored on the saved, reloaded model."""
    from core.ml.evaluation import evaluate_classifier
    from core.ml.loading import load_classifier
    from core.ml.training import train_classifier

    output = workdir / f"{setting}-{args.strategy}"
    started = time.perf_counter()
    result = train_classifier(
        base, train, args, output_dir=output, base_reference="minilm", placement=placement
    )
    seconds = time.perf_counter() - started
    metrics = evaluate_classifier(load_classifier(output, placement), test)
    return Row(
        setting,
        f"textsuite train_classifier (strategy={args.strategy})",
        result.params["strategy"],
        len(train),
        len(test),
        metrics["accuracy"],
        metrics["macro_f1"],
        seconds,
    )


def self_training_runs(
    base: Path,
    train: LabelledTexts,
    unlabelled: LabelledTexts,
    test: LabelledTexts,
    args: TrainingArguments,
    options: argparse.Namespace,
    workdir: Path,
    placement: Placement,
) -> list[Row]:
    """`train_self_training` on `train` plus the texts of `unlabelled` the latest model is
    sure of: one row per round, scored on `test` (the model each round labels with is the
    one the round before trained). The true labels only measure the pseudo-labels."""
    from core.ml.evaluation import evaluate_classifier
    from core.ml.loading import load_classifier
    from core.ml.training import TrainingResult
    from core.ml.training.self_training import confident_labels, train_self_training

    truth = dict(zip(unlabelled.texts, unlabelled.labels, strict=True))
    rows: list[Row] = []
    started = time.perf_counter()

    def row(folder: Path, added: int, right: float) -> Row:
        metrics = evaluate_classifier(load_classifier(folder, placement), test)
        return Row(
            "10-shot",
            f"textsuite self-training, round {len(rows) + 1}: {added} of {len(unlabelled)} "
            f"unlabelled sentences pseudo-labelled at confidence >= {options.min_confidence:g}, "
            f"{right:.1%} of them rightly",
            args.strategy,
            len(train) + added,
            len(test),
            metrics["accuracy"],
            metrics["macro_f1"],
            time.perf_counter() - started,
        )

    pending: list[tuple[int, float]] = []  # the last pseudo-labels, until their model exists

    def labeller(latest: TrainingResult) -> LabelledTexts:
        if pending:  # `latest` learnt from the previous round's pseudo-labels
            rows.append(row(latest.output_dir, *pending.pop()))
            print(f"  {rows[-1].method}: accuracy {rows[-1].accuracy:.4f}", flush=True)
        added = confident_labels(
            load_classifier(latest.output_dir, placement), unlabelled.texts, options.min_confidence
        )
        pairs = zip(added.texts, added.labels, strict=True)
        pending.append((len(added), sum(truth[t] == label for t, label in pairs) / len(added)))
        return added

    output = workdir / f"self-training-{args.strategy}"
    train_self_training(
        base,
        train,
        args,
        labeller,
        output_dir=output,
        base_reference="minilm",
        rounds=options.self_training_rounds,
        placement=placement,
    )
    rows.append(row(output, *pending.pop()))
    print(f"  {rows[-1].method}: accuracy {rows[-1].accuracy:.4f}", flush=True)
    return rows


def print_table(rows: list[Row], quick: bool) -> None:
    title = "Banking77 fine-tuning, test split"
    if quick:
        title += " -- SMOKE RUN (--quick): a few intents, short training; not results"
    print(f"\n## {title}\n")
    headers = ["setting", "method", "strategy", "train", "test", "accuracy", "macro-F1",
               "train s", "acc ratio", "F1 ratio", "time ratio"]  # fmt: skip
    table = []
    for row in rows:
        baseline = next(r for r in rows if r.setting == row.setting and "baseline" in r.method)
        table.append([
            row.setting, row.method, row.strategy, str(row.n_train), str(row.n_test),
            f"{row.accuracy:.4f}", f"{row.macro_f1:.4f}", f"{row.train_seconds:.1f}",
            f"{row.accuracy / baseline.accuracy:.3f}x",
            f"{row.macro_f1 / max(baseline.macro_f1, 1e-9):.3f}x",
            f"{row.train_seconds / max(baseline.train_seconds, 1e-9):.1f}x",
        ])  # fmt: skip
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for cells in table:
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)))
    print("\nratios: textsuite / baseline of the same setting (time: training wall clock).")
    for setting in dict.fromkeys(row.setting for row in rows):
        print(f"{setting}: {PUBLISHED.get(setting, '')}")


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.finetune",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 6 intents, ~1 minute")
    parser.add_argument("--settings", default="full,10-shot", help="comma-separated")
    parser.add_argument("--shots", type=int, default=10, help="examples per intent (few-shot)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--epochs", type=float, default=None, help="full fine-tuning epochs")
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--validation-fraction", type=float, default=0.2)
    parser.add_argument(
        "--compare-strategies",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also fine-tune fully at 10-shot, to check the few-shot threshold of `auto`",
    )
    parser.add_argument(
        "--strategies",
        default="auto",
        help="comma-separated textsuite strategies to run in every setting "
        "(auto, full, lora, fewshot, sentence)",
    )
    parser.add_argument(
        "--arguments",
        type=json.loads,
        default={},
        help="more TrainingArguments as JSON, e.g. '{\"adversarial_epsilon\": 1.0}'",
    )
    parser.add_argument(
        "--intent-names",
        action="store_true",
        help="also train on each intent's name in words, as the support app does",
    )
    parser.add_argument(
        "--intent-descriptions",
        action="store_true",
        help="with --intent-names: also on a one-line description of each intent, as the "
        "support app trains on a catalogue's (bench/finetune/banking77_descriptions.yaml, "
        "written for this benchmark from the intent names)",
    )
    parser.add_argument(
        "--unlabelled-rest",
        action="store_true",
        help="10-shot: also self-train on the other training sentences with their labels dropped",
    )
    parser.add_argument(
        "--min-confidence",
        type=float,
        default=0.5,
        help="self-training: the labelling model's confidence a pseudo-label needs",
    )
    parser.add_argument("--self-training-rounds", type=int, default=2)
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "bench" / "results")
    options = parser.parse_args()

    from core.ml.packaged import minilm_folder
    from core.ml.training import TrainingArguments

    placement = product_placement()
    encoder = minilm_folder(REPO_ROOT / "var" / "models")
    train_all, test_all = load_banking77("train"), load_banking77("test")
    common = {
        "batch_size": options.batch_size,
        "seed": options.seed,
        "validation_fraction": options.validation_fraction,
        "learning_rate": options.learning_rate,
    }
    if options.epochs is not None:
        common["epochs"] = options.epochs
    common.update(options.arguments)
    if options.quick:
        intents = set(random.Random(options.seed).sample(train_all.label_names, 6))
        train_all = only_intents(train_all, intents).sample_per_class(40, options.seed)
        test_all = only_intents(test_all, intents)
        common.update(epochs=2, max_length=48)
    fewshot_args = {"fewshot_pairs_per_example": 4} if options.quick else {}

    settings = {
        "full": train_all,
        "10-shot": train_all.sample_per_class(options.shots, options.seed),
    }
    sampled = set(settings["10-shot"].texts)
    rest = train_all.subset([i for i, t in enumerate(train_all.texts) if t not in sampled])
    if options.intent_names:
        from apps.support.training import with_intent_text

        descriptions = (
            yaml.safe_load(DESCRIPTIONS.read_text(encoding="utf-8"))
            if options.intent_descriptions
            else None
        )
        settings = {name: with_intent_text(data, descriptions) for name, data in settings.items()}
    elif options.intent_descriptions:
        raise SystemExit("--intent-descriptions goes with --intent-names")
    chosen = [name.strip() for name in options.settings.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in settings]
    if unknown:
        raise SystemExit(f"unknown settings {unknown}; expected some of {', '.join(settings)}")

    print(f"device {placement.device}, dtype {placement.dtype}, encoder {encoder}")
    print(f"arguments: {common}")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-finetune-") as scratch:
        for name in chosen:
            train = settings[name]
            print(f"[{name}] {len(train)} training examples, {len(train.label_names)} intents")
            rows.append(frozen_baseline(name, encoder, train, test_all, placement))
            strategies = [item.strip() for item in options.strategies.split(",") if item.strip()]
            runs = [
                TrainingArguments.from_dict({"strategy": item, **common, **fewshot_args})
                for item in strategies
            ]
            if name == "10-shot" and options.compare_strategies and "full" not in strategies:
                runs.append(TrainingArguments.from_dict({"strategy": "full", **common}))
            for args in runs:
                rows.append(
                    textsuite_run(name, encoder, train, test_all, args, Path(scratch), placement)
                )
                print(f"  {rows[-1].method}: accuracy {rows[-1].accuracy:.4f}")
            if name == "10-shot" and options.unlabelled_rest:
                rows += self_training_runs(
                    encoder, train, rest, test_all, runs[0], options, Path(scratch), placement
                )
    print_table(rows, options.quick)

    options.output.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = options.output / f"finetune-{'quick' if options.quick else 'full'}-{stamp}.json"
    path.write_text(
        json.dumps({"quick": options.quick, "rows": [asdict(r) for r in rows]}, indent=2) + "\n"
    )
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
