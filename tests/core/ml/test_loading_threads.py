"""Models loaded in several threads at once (a service starting two apps, a training job
beside a request) come out whole: transformers patches torch's initialisers and weight tying
process-wide while it builds a model, and builds that overlap used to leave them patched."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from core.ml.device import choose_placement
from core.ml.loading import load_encoder

CPU = choose_placement("cpu", "float32")


def test_loads_in_threads_leave_later_models_whole(
    tiny_llama_folder: Path, tiny_bert_folder: Path
) -> None:
    loads = [
        lambda: load_encoder(tiny_bert_folder, CPU),
        lambda: load_encoder(tiny_llama_folder, CPU),
    ]
    with ThreadPoolExecutor(4) as pool:
        for future in [pool.submit(loads[i % 2]) for i in range(24)]:
            future.result()
    # Models built afterwards have real weights, tied where asked, not uninitialised (meta).
    loaded = AutoModelForCausalLM.from_pretrained(tiny_llama_folder)
    assert not any(parameter.is_meta for parameter in loaded.parameters())
    config = LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True,
    )  # fmt: skip
    built = LlamaForCausalLM(config)
    assert built.lm_head.weight.data_ptr() == built.model.embed_tokens.weight.data_ptr()
    assert built.model.embed_tokens.weight.std() > 0  # initialised
