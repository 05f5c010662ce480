"""Fine-tuning benchmark on Banking77: `python -m bench.finetune [--quick]`."""
