"""Inference benchmark: `python -m bench.inference [--quick]`.

Dynamic batching vs one-request-at-a-time calls under concurrent clients, offline encoding vs
sentence-transformers, torch fp32 vs ONNX int8, all against the CPU's matmul roof.
"""
