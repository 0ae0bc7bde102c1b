"""Which nodes ONNX Runtime's XNNPACK execution provider would take, by its own node-support rules.

The rules are transcribed (not copied) from ONNX Runtime's XNNPACK EP sources
(``onnxruntime/core/providers/xnnpack/``), read at the newest revisions stored for each file (ones that already
handle fp16); op support there has only grown and the conditions below match the older
revisions compared, so they serve Termux's 1.29 and the current release (docs/devices.md has the details):
``xnnpack_execution_provider.cc`` (kernel registry: Conv, ConvTranspose, QLinearConv, MaxPool, AveragePool,
QLinearAveragePool, Softmax, QLinearSoftmax, Resize, Gemm, MatMul; no element-wise, activation, Transpose,
Reshape or normalization kernel), ``detail/node_support_checker.cc`` (the same op list; Relu/Clip fused only
into a preceding fp32 Conv/MaxPool/AveragePool), ``nn/conv_base.cc`` (2-D conv, constant weights,
qs8/qc8/qu8 type combinations, no u8 x s8), ``math/matmul.cc`` (fp32, A rank <= 2 with known dims, B a
constant of rank <= 2), ``math/gemm.cc`` (fp32, alpha = beta = 1, A and B rank <= 2, B and C constant; C's
shape is read unconditionally, so a Gemm without C is not counted, and C's first dim must equal one of B's),
``math/softmax.cc`` (opset 13+: last axis, static last dim; QDQ only u8 in/out with output scale 1/256 and
zero point 0), ``detail/utils.cc`` (QDQ node units handled: Conv, ConvTranspose, MaxPool, AveragePool,
Softmax, Resize; no QDQ MatMul/Gemm). Newer sources also take fp16 where XNNPACK is built with fp16
arithmetic; fp16 graphs are not modelled here.
A graph is analysed as ORT sees it before partitioning: BASIC-optimized, shapes inferred.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runtime.partitions import name_nodes, node_attr, split_stats

RULES_SOURCE = ("onnxruntime/core/providers/xnnpack (xnnpack_execution_provider.cc, node_support_checker.cc, conv_base.cc, "
                "matmul.cc, gemm.cc, softmax.cc, detail/utils.cc), newest sources; Termux 1.29")
QDQ_OPS = {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "Softmax", "Resize"}
FP32_OPS = QDQ_OPS | {"MatMul", "Gemm"}
FUSABLE_ACTIVATIONS = {"Relu", "Clip"}
FLOAT, UINT8, INT8, INT32 = 1, 2, 3, 6


@dataclass
class _Graph:
    """Lookup tables over one ONNX graph: initializers, producers, consumers, value shapes/types."""

    model: Any
    inits: dict = field(default_factory=dict)
    producer: dict = field(default_factory=dict)
    consumers: dict = field(default_factory=dict)
    values: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        from onnx import numpy_helper

        graph = self.model.graph
        self.inits = {t.name: t for t in graph.initializer}
        self.array = lambda name: numpy_helper.to_array(self.inits[name])
        self.outputs = {o.name for o in graph.output}
        for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
            self.values[vi.name] = vi
        name_nodes(self.model)
        for node in graph.node:
            for out in node.output:
                self.producer[out] = node
            for inp in node.input:
                self.consumers.setdefault(inp, []).append(node)

    def elem_type(self, name: str) -> int | None:
        if name in self.inits:
            return self.inits[name].data_type
        vi = self.values.get(name)
        return vi.type.tensor_type.elem_type if vi is not None and vi.type.HasField("tensor_type") else None

    def shape(self, name: str) -> list[int | None] | None:
        """Dims (None where unknown) or None when the rank is unknown."""
        if name in self.inits:
            return list(self.inits[name].dims)
        vi = self.values.get(name)
        if vi is None or not vi.type.tensor_type.HasField("shape"):
            return None
        return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in vi.type.tensor_type.shape.dim]


def _qdq_group(g: _Graph, node: Any) -> tuple[list, list] | None:
    """(DQ inputs, Q outputs) when ``node`` sits in a QDQ node unit, else None."""
    data_inputs = node.input[:2] if node.op_type in ("Conv", "ConvTranspose") else node.input[:1]
    dqs = [g.producer.get(i) for i in data_inputs]
    if not dqs or any(p is None or p.op_type != "DequantizeLinear" for p in dqs):
        return None
    qs = [c for c in g.consumers.get(node.output[0], [])]
    if node.output[0] in g.outputs or not qs or any(q.op_type != "QuantizeLinear" for q in qs):
        return None
    return dqs, qs


def _quant_type(g: _Graph, qnode: Any) -> str | None:
    """'u8', 's8' (per-tensor), 's8c' (per-channel, symmetric) for a Q/DQ node's quantized side."""
    if len(qnode.input) < 2 or qnode.input[1] not in g.inits:
        return None
    scale = g.array(qnode.input[1])
    zp = g.array(qnode.input[2]) if len(qnode.input) > 2 and qnode.input[2] in g.inits else None
    qtensor = qnode.input[0] if qnode.op_type == "DequantizeLinear" else qnode.output[0]
    dtype = zp.dtype if zp is not None else (np.int8 if g.elem_type(qtensor) == INT8 else np.uint8)
    if dtype == np.uint8:
        return "u8" if scale.size == 1 else None
    if dtype == np.int8:
        if scale.size == 1:
            return "s8"
        return "s8c" if zp is None or not np.any(zp) else None
    return None


def _conv_ok(g: _Graph, node: Any, group: tuple | None) -> str | None:
    x = node.input[0]
    shape = g.shape(x)
    if shape is None or len(shape) != 4:
        return "not a 2-D conv"
    if any(d is None for d in shape[1:]):
        return "C/H/W not static"
    weight = group[0][1].input[0] if group else node.input[1]
    if weight not in g.inits or len(g.inits[weight].dims) != 4:
        return "weight not a constant 4-D tensor"
    if len(node.input) > 2 and node.input[2] and node.input[2] not in g.inits:
        bias_dq = g.producer.get(node.input[2])
        if not (bias_dq is not None and bias_dq.op_type == "DequantizeLinear" and bias_dq.input[0] in g.inits):
            return "bias not constant"
    if node_attr(node, "auto_pad", b"NOTSET") in (b"SAME_LOWER", "SAME_LOWER"):
        return "auto_pad SAME_LOWER"
    if group:
        x_t, w_t = _quant_type(g, group[0][0]), _quant_type(g, group[0][1])
        y_t = _quant_type(g, group[1][0])
        if (x_t, y_t) == ("s8", "s8") and w_t in ("s8", "s8c"):
            return None
        if (x_t, w_t, y_t) == ("u8", "u8", "u8"):
            return None
        return f"QDQ conv types x={x_t} w={w_t} y={y_t} (needs s8/s8 or s8/s8-per-channel-symmetric, or all u8)"
    if g.elem_type(x) != FLOAT:
        return "input not float"
    return None


def _matmul_ok(g: _Graph, node: Any, group: tuple | None) -> str | None:
    if node.op_type == "Gemm" and (node_attr(node, "alpha", 1.0) != 1.0 or node_attr(node, "beta", 1.0) != 1.0):
        return "Gemm alpha/beta != 1"
    a, b = node.input[0], node.input[1]
    if g.elem_type(a) != FLOAT or group:
        return "not fp32 (QDQ MatMul/Gemm run on CPU)"
    a_shape, b_shape = g.shape(a), g.shape(b)
    if b not in g.inits:  # checked after A in ORT; named first here as it is the reason that no rewrite fixes
        return "B not constant (activation x activation, e.g. attention scores: no XNNPACK kernel)"
    if a_shape is None or len(a_shape) > 2:
        return f"A rank {len(a_shape) if a_shape else '?'} (needs rank <= 2)"
    if node.op_type == "MatMul" and any(d is None for d in a_shape):
        return "A has a dynamic dim (MatMul needs static dims; export with --batch 1)"
    if len(b_shape) > 2:
        return "B rank > 2"
    if node.op_type == "Gemm":
        c = node.input[2] if len(node.input) > 2 else ""
        if not c:
            return "Gemm without C (the EP's checker needs C; bias-free layers should be MatMul)"
        if c not in g.inits:
            return "C not constant"
        c_dims = list(g.inits[c].dims)
        if len(c_dims) > 2 or (c_dims and c_dims[0] not in b_shape):
            return "C shape not [N] or [1, N]-like"
    return None


def _softmax_ok(g: _Graph, node: Any, group: tuple | None) -> str | None:
    shape = g.shape(node.input[0])
    if not shape or shape[-1] is None:
        return "last dim not static"
    axis = node_attr(node, "axis", -1)
    if axis not in (-1, len(shape) - 1):
        return "axis is not the last"
    if group:
        if _quant_type(g, group[0][0]) != "u8" or _quant_type(g, group[1][0]) != "u8":
            return "QDQ softmax needs u8 in/out"
        q_out = group[1][0]
        scale = g.array(q_out.input[1])
        if abs(float(scale.reshape(-1)[0]) - 1 / 256) > 1e-4:
            return "QDQ softmax output scale != 1/256"
        if len(q_out.input) > 2 and q_out.input[2] in g.inits and np.any(g.array(q_out.input[2])):
            return "QDQ softmax output zero point != 0"
    elif g.elem_type(node.input[0]) != FLOAT:
        return "input not float"
    return None


def _pool_ok(g: _Graph, node: Any, group: tuple | None) -> str | None:
    shape = g.shape(node.input[0])
    if shape is None or len(shape) != 4 or any(d is None for d in shape[1:]):
        return "not a 2-D pool with static C/H/W"
    if group and _quant_type(g, group[0][0]) not in ("u8", "s8"):
        return "QDQ pool types"
    return None


_CHECKS = {"Conv": _conv_ok, "ConvTranspose": _conv_ok, "MatMul": _matmul_ok, "Gemm": _matmul_ok,
           "Softmax": _softmax_ok, "MaxPool": _pool_ok, "AveragePool": _pool_ok, "Resize": _pool_ok}


def xnnpack_coverage(model: Any) -> dict[str, Any]:
    """Nodes the XNNPACK EP would take in a (BASIC-optimized, shape-inferred) ONNX model, and why others not."""
    g = _Graph(model)
    taken: set[str] = set()
    fp32_anchor: set[str] = set()
    reasons: Counter = Counter()
    for node in g.model.graph.node:
        if node.op_type in FUSABLE_ACTIVATIONS and node.domain in ("", "ai.onnx"):
            src = g.producer.get(node.input[0])
            if src is not None and src.name in fp32_anchor:
                taken.add(node.name)
            continue
        check = _CHECKS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if check is None:
            continue
        group = _qdq_group(g, node)
        if group and node.op_type not in QDQ_OPS:
            reasons[f"{node.op_type}: QDQ {node.op_type} is not an XNNPACK node unit"] += 1
            continue
        why = check(g, node, group)
        if why:
            reasons[f"{node.op_type}: {why}"] += 1
            continue
        taken.add(node.name)
        if group:
            bias = g.producer.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            extra = [bias] if bias is not None and bias.op_type == "DequantizeLinear" else []
            taken.update(n.name for n in group[0] + group[1] + extra)
        elif node.op_type in ("Conv", "MaxPool", "AveragePool"):
            fp32_anchor.add(node.name)
    nodes = list(g.model.graph.node)
    return {
        "nodes_taken": sum(n.name in taken for n in nodes),
        "nodes_total": len(nodes),
        "taken_ops": dict(sorted(Counter(n.op_type for n in nodes if n.name in taken).items())),
        "cpu_ops": dict(sorted(Counter(n.op_type for n in nodes if n.name not in taken).items())),
        "rejected": dict(reasons.most_common()),
        **split_stats(g.model, taken, layout_sensitive=True),
        "rules": RULES_SOURCE,
    }
