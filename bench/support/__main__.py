"""Support bot benchmark: Banking77 accuracy, handoff quality, HTTP load.

    .venv/bin/python -m bench.support [--quick] [--parts accuracy,handoff,load,catalogue]

- accuracy: Banking77 test accuracy and macro-F1 with the default encoder, full training data
  and 10 examples per intent, trained through the support app (`train_from_catalogue`), beside
  logistic regression on frozen MiniLM embeddings fitted in the same run; `--unlabelled-rest`
  stores the other training sentences of the 10-shot setting as customer messages nobody
  labelled, with the app's self-training switched on for the run;
- handoff: 10 intents held out of training as out-of-scope; out-of-scope recall (handed off)
  and in-scope accuracy at the thresholds calibrated by training; `--handoff-shots N
  --unlabelled-rest` labels N examples per in-scope intent and stores every other training
  sentence, out-of-scope ones included, as unlabelled messages, self-training on; `--int8`
  scores the version's ONNX int8 export beside it, at the thresholds fitted on torch;
- catalogue: the demo catalogue with 3 examples per intent trained on and the rest as test:
  the examples alone, with the intents' names, with names and descriptions (`--parts
  catalogue`; not in the default parts);
- load: messages/s and p50/p99 with 32 concurrent clients over HTTP (`textsuite serve`), the
  batching engine vs the same model called once per request.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import random
import tempfile
import time
from pathlib import Path

from bench.common import REPO_ROOT, load_banking77, table

TARGETS = {"full": 0.94, "10-shot": 0.88}


def catalogue_names(data):
    """Banking77's labels as catalogue intent names (lower case; `?` dropped)."""
    import re

    from core.ml.training import LabelledTexts

    names = [re.sub(r"[^a-z0-9_.-]", "", label.lower()) for label in data.labels]
    return LabelledTexts(data.texts, names)


def accuracy_part(train, test, options) -> list[dict]:
    from bench.support.quality import frozen_baseline, train_support

    settings = {"full": train, "10-shot": train.sample_per_class(options.shots, options.seed)}
    chosen = [name.strip() for name in options.settings.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(settings))
    if unknown:
        raise SystemExit(f"unknown settings {unknown}; expected some of {', '.join(settings)}")
    sampled = set(settings["10-shot"].texts)
    rest = [text for text in train.texts if text not in sampled]
    results = []
    for name in chosen:
        data = settings[name]
        messages = rest if name == "10-shot" and options.unlabelled_rest else []
        base_acc, base_f1, base_s = frozen_baseline(data, test)
        outcome = train_support(data, test, {"seed": options.seed, **options.arguments}, messages)
        results.append(
            {
                "setting": name,
                "n_train": len(data),
                "unlabelled_messages": len(messages),
                "pseudo_labelled": outcome.pseudo_labelled,
                "accuracy": outcome.accuracy,
                "macro_f1": outcome.macro_f1,
                "seconds": outcome.seconds,
                "baseline_accuracy": base_acc,
                "baseline_macro_f1": base_f1,
                "baseline_seconds": base_s,
            }
        )
        print(f"[{name}] textsuite {outcome.accuracy:.4f} baseline {base_acc:.4f}", flush=True)
    print("\n## Banking77 test accuracy (support app training path)\n")
    table(
        [
            "setting",
            "train",
            "pseudo-labelled",
            "textsuite acc",
            "macro-F1",
            "baseline acc",
            "ratio",
            "target",
            "train s",
        ],
        [
            [
                r["setting"],
                str(r["n_train"]),
                f"{r['pseudo_labelled']} of {r['unlabelled_messages']}",
                f"{r['accuracy']:.4f}",
                f"{r['macro_f1']:.4f}",
                f"{r['baseline_accuracy']:.4f}",
                f"{r['accuracy'] / r['baseline_accuracy']:.3f}x",
                f">= {TARGETS[r['setting']]:.2f}",
                f"{r['seconds']:.0f}",
            ]
            for r in results
        ],
    )
    return results


def handoff_part(train, test, options) -> dict:
    from bench.support.quality import handoff_quality, train_support

    intents = train.label_names
    out_of_scope = set(random.Random(options.seed).sample(intents, options.oos_intents))
    in_scope = train.subset(
        [i for i, label in enumerate(train.labels) if label not in out_of_scope]
    )
    labelled = (
        in_scope.sample_per_class(options.handoff_shots, options.seed)
        if options.handoff_shots
        else in_scope
    )
    kept = set(labelled.texts)
    # The rest of the training sentences, out-of-scope ones included, as messages nobody
    # labelled: what self-training would meet in a real helpdesk.
    messages = [text for text in train.texts if text not in kept] if options.unlabelled_rest else []
    outcome = train_support(
        labelled, test, {"seed": options.seed, **options.arguments}, messages, int8=options.int8
    )
    print(
        f"trained on {len(labelled)} labelled examples; {outcome.pseudo_labelled} of "
        f"{len(messages)} unlabelled messages pseudo-labelled"
    )
    quality = handoff_quality(outcome, test, out_of_scope)
    # The same model and thresholds without the nearest-example check: what it adds.
    without = handoff_quality(dataclasses.replace(outcome, similarity=None), test, out_of_scope)
    rows = [("confidence, margin", without), ("... and unfamiliar", quality)]
    if outcome.int8 is not None:  # the int8 export with the thresholds fitted on torch
        int8_quality = handoff_quality(outcome.int8, test, out_of_scope)
        rows.append(("... served int8 (same thresholds)", int8_quality))
    print(f"\n## Handoff: {len(out_of_scope)} Banking77 intents unseen in training\n")
    table(
        [
            "handoff on",
            "out-of-scope recall",
            "in-scope answered accuracy",
            "in-scope coverage",
            "in-scope accuracy (handoff = wrong)",
        ],
        [
            [
                name,
                f"{q['out_of_scope_recall']:.3f}",
                f"{q['in_scope_answered_accuracy']:.3f}",
                f"{q['in_scope_coverage']:.3f}",
                f"{q['in_scope_accuracy_counting_handoffs_as_wrong']:.3f}",
            ]
            for name, q in rows
        ],
    )
    if options.int8:
        print(f"int8 export: {outcome.int8_check}")
    print(
        "thresholds: "
        + ", ".join(f"{name} {value:.3f}" for name, value in outcome.thresholds.items())
    )
    print("target: out-of-scope recall >= 0.80 at in-scope accuracy >= 0.92")
    return {
        **quality,
        "labelled": len(labelled),
        "unlabelled_messages": len(messages),
        "pseudo_labelled": outcome.pseudo_labelled,
        "without_unfamiliar": without,
        **(
            {"int8": int8_quality, "int8_accuracy": outcome.int8.accuracy}
            if outcome.int8 is not None
            else {}
        ),
        "int8_check": outcome.int8_check,
        "out_of_scope": sorted(out_of_scope),
        "thresholds": outcome.thresholds,
    }


def catalogue_part(options) -> dict:
    from bench.support.quality import intent_text_accuracy

    seeds = [options.seed + i for i in range(options.catalogue_seeds)]
    print(f"\n## Demo catalogue, {options.catalogue_shots} examples per intent trained on\n")
    result = intent_text_accuracy(options.catalogue_shots, seeds, options.arguments)
    table(
        ["trained on", "test accuracy, mean", "by seed"],
        [
            [name, f"{sum(values) / len(values):.4f}", " ".join(f"{v:.4f}" for v in values)]
            for name, values in result["accuracy"].items()
        ],
    )
    print(f"test: the other {result['n_test']} examples of the catalogue")
    return result


def load_part(test, options) -> dict:
    from bench.support.load import drop_database, measure, prepare_world, scratch_postgres

    texts = random.Random(options.seed).sample(test.texts, min(500, len(test.texts)))
    with tempfile.TemporaryDirectory(prefix="bench-support-load-") as scratch:
        workdir = Path(scratch)
        database = scratch_postgres(options.postgres_url) if options.postgres_url else None
        try:
            url, key = prepare_world(workdir, database)
            run = functools.partial(
                measure, url, key, workdir / "models", texts, options.clients, options.seconds
            )
            batched, single = run(), run(TEXTSUITE_BATCH_MAX_SIZE="1")
        finally:
            if database is not None:
                drop_database(options.postgres_url, database)
    backend = "PostgreSQL" if options.postgres_url else "SQLite"
    print(
        f"\n## HTTP load: {options.clients} concurrent clients, {options.seconds:.0f} s each, "
        f"{backend}\n"
    )
    table(
        ["server", "messages/s", "p50 ms", "p99 ms", "errors", "vs once per request"],
        [
            [
                name,
                f"{r.per_second:.1f}",
                f"{r.p50_ms:.0f}",
                f"{r.p99_ms:.0f}",
                str(r.errors),
                f"{r.per_second / single.per_second:.2f}x",
            ]
            for name, r in (("once per request (batch 1)", single), ("batching engine", batched))
        ],
    )
    return {"batched": batched.__dict__, "once_per_request": single.__dict__}


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.support",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 8 intents, short runs")
    parser.add_argument("--parts", default="accuracy,handoff,load")
    parser.add_argument("--settings", default="full,10-shot", help="accuracy part: which")
    parser.add_argument("--shots", type=int, default=10)
    parser.add_argument(
        "--unlabelled-rest",
        action="store_true",
        help="accuracy part, 10-shot, and handoff part with --handoff-shots: store the other "
        "training sentences as unlabelled customer messages (self-training)",
    )
    parser.add_argument(
        "--handoff-shots",
        type=int,
        default=0,
        help="handoff part: label only this many examples per in-scope intent (0: all)",
    )
    parser.add_argument(
        "--int8",
        action="store_true",
        help="handoff part: also serve the version from its ONNX int8 export "
        "(TEXTSUITE_SERVE_INT8) with the thresholds fitted on torch",
    )
    parser.add_argument("--catalogue-shots", type=int, default=3, help="catalogue part")
    parser.add_argument("--catalogue-seeds", type=int, default=5, help="catalogue part")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--oos-intents", type=int, default=10)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--postgres-url",
        default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
        help="load: serve from a scratch database on this server ('' for a SQLite file)",
    )
    parser.add_argument(
        "--arguments",
        type=json.loads,
        default={},
        help="TrainingArguments for the support model, as JSON",
    )
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "bench" / "results")
    options = parser.parse_args()
    train, test = (catalogue_names(load_banking77(split)) for split in ("train", "test"))
    if options.quick:
        intents = set(random.Random(options.seed).sample(train.label_names, 8))
        keep = lambda d: d.subset([i for i, x in enumerate(d.labels) if x in intents])  # noqa: E731
        train, test = keep(train).sample_per_class(30, options.seed), keep(test)
        options.oos_intents, options.seconds = 2, 4.0
        options.arguments = {"fewshot_pairs_per_example": 2, "epochs": 1, **options.arguments}
    parts = {part.strip() for part in options.parts.split(",")}
    report: dict = {"quick": options.quick}
    if "accuracy" in parts:
        report["accuracy"] = accuracy_part(train, test, options)
    if "handoff" in parts:
        report["handoff"] = handoff_part(train, test, options)
    if "load" in parts:
        report["load"] = load_part(test, options)
    if "catalogue" in parts:
        report["catalogue"] = catalogue_part(options)
    options.output.mkdir(parents=True, exist_ok=True)
    path = (
        options.output
        / f"support-{'quick' if options.quick else 'full'}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    )
    path.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
