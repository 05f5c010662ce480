"""One prepared script for a GPU machine: CUDA-safe workers, bf16 training, Llama LoRA."""
