"""GPU check: run the same code paths as on CPU, on CUDA, and record the figures.

    python -m bench.gpu_check [--quick] [--out DIR]

1. placement: `choose_placement()` picks cuda and bf16 where supported;
2. CUDA safety: importing and building the Celery worker app does not initialise CUDA (so a
   prefork parent never forks with a CUDA context);
3. batched inference: MiniLM on the GPU (bf16) vs fp32 CPU on the same sentences: agreement
   and throughput;
4. serving: the dynamic batcher on the GPU vs one-request-at-a-time calls, closed-loop clients;
5. bf16 training: full fine-tuning of MiniLM on Banking77 (subset) with mixed precision;
6. Llama LoRA: SmolLM2-135M (Llama architecture) LoRA classification, saved and reloaded.

Each step's figures go to `<out>/gpu_check.json`. `--quick` shrinks every size so the script
can be checked on a CPU-only machine in a couple of minutes (it then reports `device: cpu`).
`--minilm FOLDER` and `--smollm2-gguf FILE` point at copies of the packaged models on a machine
where the model packages are not installed (a GPU box that only has a CUDA PyTorch).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import REPO_ROOT, load_banking77

CACHE = REPO_ROOT / "var" / "models"
# Set from the command line: where the models are when their packages are not installed.
MODEL_PATHS: dict[str, Path] = {}


def minilm() -> Path:
    from core.ml.packaged import minilm_folder

    return MODEL_PATHS.get("minilm") or minilm_folder(CACHE)


def smollm2() -> Path:
    from core.ml.packaged import convert_gguf, smollm2_folder

    gguf = MODEL_PATHS.get("smollm2_gguf")
    if gguf is None:
        return smollm2_folder(CACHE)
    target = CACHE / "SmolLM2-135M-Instruct-gpu-check"
    if not (target / "config.json").exists():
        convert_gguf(gguf, target)
    return target


def banking77(split: str, limit: int | None = None, per_class: int | None = None) -> Any:
    data = load_banking77(split)
    if per_class is not None:
        data = data.sample_per_class(per_class, seed=0)
    if limit is not None:
        data = data.subset(range(min(limit, len(data))))
    return data


def step_placement(_quick: bool) -> dict[str, Any]:
    import torch

    from core.ml.device import choose_placement

    placement = choose_placement()
    return {
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "bf16_supported": torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        "placement": {"device": str(placement.device), "dtype": str(placement.dtype)},
        "mixed_precision": placement.mixed_precision,
    }


def step_cuda_safety(_quick: bool) -> dict[str, Any]:
    """Build the worker app as a prefork parent does, then fork a child that uses CUDA."""
    probe = (
        "import os, torch\n"
        "from core.settings import load_settings\n"
        "from workers.celery_app import create_celery_app\n"
        "create_celery_app(load_settings(_env_file=None, broker_url='redis://127.0.0.1:6379/0'))\n"
        "print(torch.cuda.is_initialized())\n"
        "if not torch.cuda.is_available():\n"
        "    print('no cuda')\n"
        "    raise SystemExit\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    total = torch.ones(4, device='cuda').sum().item()\n"
        "    os._exit(0 if total == 4 else 1)\n"
        "print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))\n"
    )
    lines = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    initialised = lines[0] == "True"
    child = " ".join(lines[1:])
    return {
        "cuda_initialised_by_worker_setup": initialised,
        "forked_child_uses_cuda": child,  # "0": exit status of the child; "no cuda" on a CPU
        "ok": not initialised and child in ("0", "no cuda"),
    }


def step_inference(quick: bool) -> dict[str, Any]:
    import numpy as np

    from core.ml.device import choose_placement
    from core.ml.loading import load_encoder

    texts = banking77("test", limit=200 if quick else 3000).texts
    folder = minilm()
    cpu = load_encoder(folder, choose_placement("cpu", "float32"))
    accelerated = load_encoder(folder, choose_placement())
    reference = cpu.encode(texts[:200])
    accelerated.encode(texts[:64])  # warm-up (kernels, allocator)
    started = time.perf_counter()
    embeddings = accelerated.encode(texts, batch_size=128)
    elapsed = time.perf_counter() - started
    cosine = (embeddings[:200] * reference).sum(axis=1)
    return {
        "sentences": len(texts),
        "sentences_per_s": round(len(texts) / elapsed, 1),
        "cosine_to_cpu_fp32_min": round(float(np.min(cosine)), 5),
        "cosine_to_cpu_fp32_mean": round(float(np.mean(cosine)), 5),
    }


def step_serving(quick: bool) -> dict[str, Any]:
    import asyncio

    from bench.inference.serving import measure_engine, measure_naive
    from core.ml.batching import BatchingConfig
    from core.ml.device import choose_placement
    from core.ml.loading import load_encoder

    texts = banking77("test", limit=500).texts
    encoder = load_encoder(minilm(), choose_placement())
    levels, seconds = ([1, 8] if quick else [1, 32, 128]), (1.0 if quick else 4.0)
    naive = asyncio.run(measure_naive(encoder, texts, levels, seconds))
    engine = asyncio.run(measure_engine(encoder, texts, levels, seconds, BatchingConfig()))
    return {
        f"clients_{n}": {
            "one_at_a_time_req_s": round(naive[n].throughput, 1),
            "engine_req_s": round(engine[n].throughput, 1),
            "engine_p50_ms": round(engine[n].p50_ms, 2),
            "engine_p99_ms": round(engine[n].p99_ms, 2),
            "speed_up": round(engine[n].throughput / naive[n].throughput, 2),
        }
        for n in levels
    }


def _train(base_reference: str, folder: Path, train: Any, args: Any, out: Path) -> float:
    """Train on the chosen placement; return the wall time in seconds."""
    from core.ml.device import choose_placement
    from core.ml.training import train_classifier

    started = time.perf_counter()
    train_classifier(
        folder,
        train,
        args,
        output_dir=out,
        base_reference=base_reference,
        placement=choose_placement(),
    )
    return round(time.perf_counter() - started, 1)


def step_bf16_training(quick: bool) -> dict[str, Any]:
    from core.ml.device import choose_placement
    from core.ml.evaluation import evaluate_classifier
    from core.ml.loading import load_classifier
    from core.ml.training import TrainingArguments

    train = banking77("train", per_class=4 if quick else 60)
    test = banking77("test", limit=300 if quick else None)
    args = TrainingArguments(strategy="full", epochs=1 if quick else 4, batch_size=32)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model"
        seconds = _train("all-MiniLM-L6-v2", minilm(), train, args, out)
        report = evaluate_classifier(load_classifier(out, choose_placement()), test)
    return {
        "train_examples": len(train),
        "mixed_precision": choose_placement().mixed_precision,
        "train_seconds": seconds,
        "test_accuracy": report["accuracy"],
        "test_macro_f1": report["macro_f1"],
    }


def step_llama_lora(quick: bool) -> dict[str, Any]:
    import numpy as np

    from core.ml.device import choose_placement
    from core.ml.evaluation import evaluate_classifier
    from core.ml.loading import load_classifier
    from core.ml.training import LoraArguments, TrainingArguments

    folder = smollm2()
    train = banking77("train", per_class=2 if quick else 30)
    test = banking77("test", limit=100 if quick else 1000)
    args = TrainingArguments(
        strategy="lora",
        epochs=1 if quick else 3,
        batch_size=16,
        lora=LoraArguments(r=16),
        max_steps=4 if quick else None,
    )
    placement = choose_placement()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "lora"
        seconds = _train("SmolLM2-135M-Instruct", folder, train, args, out)
        classifier = load_classifier(out, placement, lambda _reference: folder)
        again = load_classifier(out, placement, lambda _reference: folder)
        sample = test.texts[:32]
        same = np.allclose(classifier.predict_proba(sample), again.predict_proba(sample), atol=1e-3)
        report = evaluate_classifier(classifier, test)
    return {
        "train_examples": len(train),
        "train_seconds": seconds,
        "mixed_precision": placement.mixed_precision,
        "reload_identical": bool(same),
        "test_accuracy": report["accuracy"],
        "test_macro_f1": report["macro_f1"],
    }


STEPS: dict[str, Callable[[bool], dict[str, Any]]] = {
    "placement": step_placement,
    "cuda_safety": step_cuda_safety,
    "inference": step_inference,
    "serving": step_serving,
    "bf16_training": step_bf16_training,
    "llama_lora": step_llama_lora,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (checks the script)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench/results")))
    parser.add_argument("--only", nargs="*", choices=list(STEPS), help="run only these steps")
    parser.add_argument("--skip", nargs="*", default=[], choices=list(STEPS), help="skip these")
    parser.add_argument("--minilm", type=Path, help="all-MiniLM-L6-v2 folder (default: package)")
    parser.add_argument("--smollm2-gguf", type=Path, help="SmolLM2 GGUF file (default: package)")
    options = parser.parse_args()
    if options.minilm:
        MODEL_PATHS["minilm"] = options.minilm.resolve()
    if options.smollm2_gguf:
        MODEL_PATHS["smollm2_gguf"] = options.smollm2_gguf.resolve()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results: dict[str, Any] = {}
    for name, step in STEPS.items():
        if (options.only and name not in options.only) or name in options.skip:
            continue
        started = time.perf_counter()
        try:
            results[name] = step(options.quick)
        except Exception as exc:  # record and go on: one failing step must not hide the rest
            results[name] = {
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc()[-2000:],
            }
        results[name]["step_seconds"] = round(time.perf_counter() - started, 1)
        print(f"== {name}: {json.dumps(results[name], default=str)[:600]}", flush=True)
    options.out.mkdir(parents=True, exist_ok=True)
    name = "gpu_check" + ("" if not options.only else "_" + "_".join(options.only))
    (options.out / f"{name}.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {options.out / name}.json")


if __name__ == "__main__":
    main()
