"""Smaller storage for weights that keep float arithmetic: symmetric INT8 helpers and fp16 storage.

A dense node the accuracy search keeps float keeps float activations and float math (that is what made it
sensitive), but its weight does not need 32 bits on disk: ``fp16_weights`` stores it as fp16 behind a
``Cast`` that ONNX Runtime constant-folds when the session is created, so the graph that runs is the
float graph (same kernels, same speed) with weights rounded to fp16. Weight-only INT8 (DequantizeLinear) was
measured too and rejected: see docs/quantization.md ("Weights kept float").
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import onnx
from onnx import helper, numpy_helper


def symmetric_int8(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """(int8 values, float32 scales) with one symmetric scale per index of ``axis`` (zero point 0).

    The scales keep the reduced dimensions (size 1), so ``q * scale`` is the dequantized tensor.
    """
    reduce = tuple(d for d in range(w.ndim) if d != axis % w.ndim)
    amax = np.max(np.abs(w), axis=reduce, keepdims=True)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
    return q, scale


def sqnr_db(ref: np.ndarray, approx: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio of ``approx`` against ``ref`` in dB (inf when equal)."""
    ref = ref.astype(np.float64)
    noise = float(np.sum((ref - approx) ** 2))
    return float("inf") if noise == 0 else float(10 * np.log10(float(np.sum(ref ** 2)) / noise))


def fp16_weights(model: onnx.ModelProto, nodes: Iterable[str]) -> tuple[onnx.ModelProto, list[dict]]:
    """Store the float32 weight (input 1) of each named node as fp16 + ``Cast`` to float.

    Changes ``model`` in place; returns it and one record per weight (node, tensor, bytes before and after,
    SQNR in dB). Weights read by another node too, or that are not float32 initializers, are left alone.
    """
    wanted = set(nodes)
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    uses: dict[str, int] = {}
    for n in graph.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    records, casts, replaced = [], {}, set()
    for k, node in enumerate(graph.node):
        if node.name not in wanted or len(node.input) < 2:
            continue
        w = inits.get(node.input[1])
        if w is None or w.data_type != onnx.TensorProto.FLOAT or uses.get(w.name, 0) != 1:
            continue
        arr = numpy_helper.to_array(w)
        half = arr.astype(np.float16)
        h_name, f_name = f"{w.name}_fp16", f"{w.name}_from_fp16"
        graph.initializer.append(numpy_helper.from_array(half, h_name))
        casts[k] = helper.make_node("Cast", [h_name], [f_name], name=f"{node.name}_weight_cast",
                                    to=onnx.TensorProto.FLOAT)
        node.input[1] = f_name
        replaced.add(w.name)
        records.append({"node": node.name, "tensor": w.name, "float_bytes": int(arr.nbytes),
                        "stored_bytes": int(half.nbytes), "sqnr_db": sqnr_db(arr, half.astype(np.float64))})
    if records:
        ordered = [m for k, n in enumerate(graph.node) for m in ([casts[k], n] if k in casts else [n])]
        del graph.node[:]
        graph.node.extend(ordered)
        kept = [t for t in graph.initializer if t.name not in replaced]
        del graph.initializer[:]
        graph.initializer.extend(kept)
    return model, records
