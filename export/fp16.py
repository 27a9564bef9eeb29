"""FP16 ONNX: weights and activations in float16, I/O kept float32, overflow-prone ops kept float32."""

from __future__ import annotations

from pathlib import Path

import onnx

FP32_OPS = ("LayerNormalization", "ReduceMean", "ReduceL2", "Pow", "Softmax")
"""Normalisations and reductions whose intermediate sums overflow or lose too much in float16."""


def convert_fp16(fp32_path: Path, out_path: Path, keep_fp32_ops: tuple[str, ...] = FP32_OPS) -> None:
    """Write the float16 model (``keep_io_types``: callers still feed and receive float32)."""
    from onnxconverter_common import float16

    model = onnx.load(str(fp32_path))
    blocked = list(float16.DEFAULT_OP_BLOCK_LIST) + list(keep_fp32_ops)
    converted = float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=blocked)
    onnx.save(converted, str(out_path))
