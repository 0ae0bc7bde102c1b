"""Per-target INT8 recipes: which nodes may be quantized and with which QDQ types.

Only dense compute is a candidate (Conv with group 1 over a map larger than 1x1, MatMul/Gemm with a constant
weight; token-embedding tables are stored compactly by ``quantize.token_table`` instead): on ORT's CPU EP int8
depthwise convs are slower than fp32 and Q/DQ pairs around GELU/LayerNorm block fusions, so quantizing them
costs speed and accuracy for nothing. A Conv over a pooled [N, C, 1, 1] vector (a squeeze-excitation gate) has
next to no multiply-accumulates, and its error rescales whole feature maps through the gate.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import onnx
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.calibrate import TensorsData, save_tensors_data

from edgeclip.files import atomic_path
from quantize.errors import QuantizeError
from quantize.xnnpack_graph import linear_layers_to_2d


@dataclass(frozen=True)
class Target:
    """A deployment target's quantization constraints."""

    name: str
    activations: str  # "U8" | "S8"
    weights: str  # always "S8" (symmetric)
    per_channel: bool
    op_types: tuple[str, ...]  # dense op types this target runs fast in int8
    fixed_shapes: bool = False
    gelu: str | None = None  # required GELU form of the fp32 graph, if any
    provider: str = "CPUExecutionProvider"
    fp16_kept_float: bool = False  # weights of dense nodes kept float are stored fp16 (Cast folded at load)

    @property
    def activation_type(self) -> QuantType:
        return QuantType.QUInt8 if self.activations == "U8" else QuantType.QInt8

    @property
    def export_options(self) -> dict:
        """`export_bundle` options of the fp32 graphs this target quantizes: NNAPI's preset (batch 1, tanh GELU,
        opset 16), batch 1 for the other fixed-shape targets."""
        return {"nnapi": self.name == "nnapi", "batch": 1 if self.fixed_shapes else None}


TARGETS = {
    # CPU EP: u8 activations x s8 weights use the VNNI/AMX int8 GEMM kernels.
    "cpu": Target("cpu", "U8", "S8", True, ("Conv", "MatMul", "Gemm"), fp16_kept_float=True),
    # XNNPACK takes QDQ Conv (s8 activations, symmetric s8 per-channel weights); its MatMul/Gemm are
    # fp32-only and need a static 2-D A, so the graphs are fixed-batch and linear layers are rewritten to 2-D
    # Gemm (quantize/xnnpack_graph.py): they stay float and run in XNNPACK.
    "xnnpack": Target("xnnpack", "S8", "S8", True, ("Conv",), fixed_shapes=True,
                      provider="XnnpackExecutionProvider"),
    # NNAPI: u8 activations, symmetric per-channel s8 conv weights, static shapes, no Erf.
    "nnapi": Target("nnapi", "U8", "S8", True, ("Conv", "MatMul", "Gemm"), fixed_shapes=True, gelu="tanh",
                    provider="NnapiExecutionProvider"),
}


def get_target(name: str) -> Target:
    """The Target preset called ``name``; QuantizeError lists the valid ones otherwise."""
    try:
        return TARGETS[name]
    except KeyError:
        raise QuantizeError(f"unknown target {name!r}; choose one of {', '.join(TARGETS)}") from None


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def candidate_nodes(model: onnx.ModelProto, target: Target) -> list[str]:
    """Names of the dense nodes the target may quantize, in graph order."""
    inits = {i.name: i for i in model.graph.initializer}
    consts = {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    pooled = _pooled_tensors(model) if "Conv" in target.op_types else set()
    out = []
    for node in model.graph.node:
        if node.op_type not in target.op_types:
            continue
        if node.op_type == "Conv":
            w = inits.get(node.input[1])
            if w is None or len(w.dims) != 4 or _attr(node, "group", 1) != 1:
                continue  # depthwise/grouped convs stay float: slower in int8 on the CPU EP
            if node.input[0] in pooled:
                continue  # squeeze-excitation gate: no compute to save, and its error scales a whole map
        elif node.op_type in ("MatMul", "Gemm"):
            if node.input[1] not in inits and node.input[1] not in consts:
                continue  # activation x activation (attention scores) is not a dense layer
            w = inits.get(node.input[1])
            if w is not None and len(w.dims) != 2:
                continue
        out.append(node.name)
    return out


def _pooled_tensors(model: onnx.ModelProto) -> set[str]:
    """Names of 4-D tensors whose spatial dims are known to be 1 (pooled [N, C, 1, 1] vectors)."""
    graph = onnx.shape_inference.infer_shapes(model).graph  # also when an exporter annotated only some tensors
    out = set()
    for v in (*graph.input, *graph.value_info):
        dims = v.type.tensor_type.shape.dim
        if len(dims) == 4 and all(d.HasField("dim_value") and d.dim_value == 1 for d in dims[2:]):
            out.add(v.name)
    return out


def prepare_model(model: onnx.ModelProto, target: Target) -> onnx.ModelProto:
    """The graph the quantizer works on: named nodes, unshared dense weights and, except for NNAPI
    (which has no Gelu op and gets tanh-GELU graphs), exact GELU fused into one node. For XNNPACK, linear
    layers over [B, T, C] become 2-D Gemm/MatMul that its kernels take (``quantize.xnnpack_graph``)."""
    model = unshare_weights(ensure_node_names(model))
    if target.name == "nnapi":
        return model
    # shapes first: a fused Gelu keeps its output's inferred type and shape (calibration and EP checks need them)
    if target.name == "xnnpack":
        model, _ = linear_layers_to_2d(model)  # returns the model with its shapes already inferred
    else:
        model = onnx.shape_inference.infer_shapes(model)
    return fuse_exact_gelu(model)


def _const_value(name: str, inits: dict, consts: dict) -> float | None:
    t = inits.get(name) if name in inits else consts.get(name)
    if t is None:
        return None
    arr = onnx.numpy_helper.to_array(t)
    return float(arr.reshape(-1)[0]) if arr.size == 1 else None


def fuse_exact_gelu(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace torch's exact-GELU subgraph x*0.5*(1+erf(x/sqrt2)) by one ``com.microsoft.Gelu``.

    ORT fuses this pattern itself for fp32, but once the producer is quantized it duplicates the
    DequantizeLinear feeding Div and Mul and the fusion no longer matches: the int8 graph would run
    five float ops per GELU. Fusing first keeps int8 graphs as lean as fp32 ones (CPU/XNNPACK targets).
    """
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    consts = {n.output[0]: next(a.t for a in n.attribute if a.name == "value")
              for n in graph.node if n.op_type == "Constant" and any(a.name == "value" for a in n.attribute)}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def only(name: str, op: str):
        users = consumers.get(name, [])
        return users[0] if len(users) == 1 and users[0].op_type == op else None

    def other(node, name: str) -> str:
        return node.input[1] if node.input[0] == name else node.input[0]

    drop, fused, typed = set(), {}, set()
    for div in graph.node:
        if div.op_type != "Div" or not (1.41 < (_const_value(div.input[1], inits, consts) or 0) < 1.42):
            continue
        x = div.input[0]
        erf = only(div.output[0], "Erf")
        add = erf and only(erf.output[0], "Add")
        if not add or abs((_const_value(other(add, erf.output[0]), inits, consts) or 0) - 1.0) > 1e-6:
            continue
        mul1 = only(add.output[0], "Mul")
        if not mul1 or other(mul1, add.output[0]) != x:
            continue
        mul2 = only(mul1.output[0], "Mul")
        if not mul2 or abs((_const_value(other(mul2, mul1.output[0]), inits, consts) or 0) - 0.5) > 1e-6:
            continue
        gelu = onnx.helper.make_node("Gelu", [x], [mul2.output[0]], name=f"{div.name}_Gelu", domain="com.microsoft")
        fused[id(mul2)] = gelu
        typed.add(mul2.output[0])
        drop.update(id(n) for n in (div, erf, add, mul1))
    if fused:
        nodes = [fused.get(id(n), n) for n in graph.node if id(n) not in drop]
        used = {i for n in nodes for i in n.input} | {o.name for o in graph.output}
        nodes = [n for n in nodes if n.op_type != "Constant" or n.output[0] in used]  # the pattern's constants
        del graph.node[:]
        graph.node.extend(nodes)
        known = {v.name for v in graph.value_info}  # calibration selects tensors by their declared type
        graph.value_info.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None)
                                for t in sorted(typed - known))
        if not any(o.domain == "com.microsoft" for o in model.opset_import):
            model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    return model


def ensure_node_names(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give unnamed nodes stable unique names (node selection and the report refer to names)."""
    seen = set()
    for k, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{k}"
        seen.add(node.name)
    return model


def unshare_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give every dense node its own weight/bias initializer.

    Exporters deduplicate equal tensors (e.g. all-zero biases) and alias them with ``Identity``
    nodes; a shared bias makes its DequantizeLinear shared, and ORT then refuses to fuse the
    Q/DQ group into QLinearConv, leaving a slow float Conv wrapped in Q/DQ.
    """
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    aliases = {n.output[0]: n.input[0] for n in graph.node
               if n.op_type == "Identity" and n.input[0] in inits and n.output[0] not in outputs}
    keep = [n for n in graph.node if not (n.op_type == "Identity" and n.output[0] in aliases)]
    used: set[str] = set()
    for node in keep:
        for k, name in enumerate(node.input):
            source = aliases.get(name, name)
            if source not in inits or node.op_type not in ("Conv", "MatMul", "Gemm", "Gather"):
                if name in aliases:
                    node.input[k] = source
                continue
            if source in used or name in aliases:
                copy = onnx.TensorProto()
                copy.CopyFrom(inits[source])
                copy.name = f"{source}__{node.name or k}"
                graph.initializer.append(copy)
                node.input[k] = copy.name
            used.add(source)
    del graph.node[:]
    graph.node.extend(keep)
    return model


def quantize_nodes(fp32_path: str | os.PathLike, out_path: str | os.PathLike, ranges: TensorsData,
                   nodes: Iterable[str], target: Target) -> Path:
    """Write a QDQ model of ``fp32_path`` with exactly ``nodes`` quantized, using precomputed ranges."""
    nodes = list(nodes)
    if not nodes:
        raise QuantizeError("quantize_nodes called with no node to quantize")
    extra = {
        "ActivationSymmetric": False,
        "WeightSymmetric": True,
        "ForceQuantizeNoInputCheck": False,
        "AddQDQPairToWeight": False,
    }
    root_level = logging.root.level
    logging.root.setLevel(logging.ERROR)  # ORT logs a pre-processing hint on the root logger at every call
    try:
        with tempfile.TemporaryDirectory(prefix="edgeclip-q-") as tmp, atomic_path(out_path) as tmp_out:
            cache = Path(tmp) / "ranges.json"
            save_tensors_data(ranges, cache)
            quantize_static(
                str(fp32_path), str(tmp_out), calibration_data_reader=None, quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(target.op_types), per_channel=target.per_channel,
                activation_type=target.activation_type, weight_type=QuantType.QInt8,
                nodes_to_quantize=nodes, calibrate_method=ranges.calibration_method,
                extra_options=extra, calibration_cache_path=cache)
    finally:
        logging.root.setLevel(root_level)
    return Path(out_path)
