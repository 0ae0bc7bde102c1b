"""Graph rewrites that let ONNX Runtime's XNNPACK EP take a fixed-shape graph's linear layers.

XNNPACK's MatMul/Gemm kernels take only a 2-D (static) A and a constant 2-D B (``runtime/xnnpack_rules.py``).
torch exports a linear layer over ``[B, T, C]`` activations as ``MatMul(x, W) (+ bias)`` with a 3-D A, so
XNNPACK leaves it on the CPU EP. ``linear_layers_to_2d`` rewrites each such layer with static shapes as
``Reshape [B*T, C] -> Gemm(W, bias) -> Reshape [B, T, N]`` (``MatMul`` when there is no bias): the same
arithmetic, and a form ORT's BASIC-level optimizer keeps. Attention score MatMuls multiply two activations
(B is not constant) and XNNPACK has no kernel for them, so they are left alone.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def _static_shape(values: dict, name: str) -> list[int] | None:
    vi = values.get(name)
    if vi is None or not vi.type.tensor_type.HasField("shape"):
        return None
    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in vi.type.tensor_type.shape.dim]
    return dims if dims and all(d > 0 for d in dims) else None


def _bias_add(node: onnx.NodeProto, consumers: dict, inits: dict, outputs: set, n_out: int):
    """(Add node, bias initializer name) when the MatMul's only consumer adds a constant [N] bias, else None."""
    users = consumers.get(node.output[0], [])
    if len(users) != 1 or users[0].op_type != "Add" or users[0].domain not in ("", "ai.onnx") \
            or node.output[0] in outputs:
        return None
    add = users[0]
    other = add.input[1] if add.input[0] == node.output[0] else add.input[0]
    bias = inits.get(other)
    if bias is None or bias.data_type != onnx.TensorProto.FLOAT or list(bias.dims) != [n_out]:
        return None
    return add, other


def linear_layers_to_2d(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Rewrite linear layers over static rank >= 3 activations as Reshape -> 2-D Gemm/MatMul -> Reshape.

    Returns the model (changed in place, shapes re-inferred) and the number of layers rewritten. Only
    ``MatMul(A, W)`` with a constant float 2-D ``W`` and a fully static float ``A`` of rank >= 3 qualifies;
    a following ``Add`` of a constant ``[N]`` bias becomes the Gemm's C input.
    """
    model = onnx.shape_inference.infer_shapes(model, data_prop=True)  # shapes computed by Shape/Gather/Concat
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    values = {v.name: v for v in list(graph.input) + list(graph.value_info) + list(graph.output)}
    outputs = {o.name for o in graph.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    replaced: dict[int, list] = {}
    dropped: set[int] = set()
    new_inits = []
    for node in graph.node:
        if node.op_type != "MatMul" or node.domain not in ("", "ai.onnx"):
            continue
        weight = inits.get(node.input[1])
        a_shape = _static_shape(values, node.input[0])
        if weight is None or weight.data_type != onnx.TensorProto.FLOAT or len(weight.dims) != 2 \
                or a_shape is None or len(a_shape) < 3 or a_shape[-1] != weight.dims[0]:
            continue
        k, n_out = int(weight.dims[0]), int(weight.dims[1])
        rows = int(np.prod(a_shape[:-1]))
        base = node.name or f"matmul_{len(replaced)}"
        fused = _bias_add(node, consumers, inits, outputs, n_out)
        out_name = fused[0].output[0] if fused else node.output[0]
        flat_shape, back_shape = f"{base}_xnn_2d_shape", f"{base}_xnn_nd_shape"
        new_inits += [numpy_helper.from_array(np.array([rows, k], np.int64), flat_shape),
                      numpy_helper.from_array(np.array(a_shape[:-1] + [n_out], np.int64), back_shape)]
        a2, y2 = f"{base}_xnn_a2d", f"{base}_xnn_y2d"
        dense = (helper.make_node("Gemm", [a2, node.input[1], fused[1]], [y2], name=f"{base}_xnn_gemm")
                 if fused else helper.make_node("MatMul", [a2, node.input[1]], [y2], name=f"{base}_xnn_matmul"))
        replaced[id(node)] = [helper.make_node("Reshape", [node.input[0], flat_shape], [a2], name=f"{base}_xnn_flat"),
                              dense,
                              helper.make_node("Reshape", [y2, back_shape], [out_name], name=f"{base}_xnn_unflat")]
        if fused:
            dropped.add(id(fused[0]))
    if not replaced:
        return model, 0
    nodes = []
    for n in graph.node:
        if id(n) in dropped:
            continue
        nodes.extend(replaced.get(id(n), [n]))
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(new_inits)
    del graph.value_info[:]  # stale after the rewrite; inferred afresh
    return onnx.shape_inference.infer_shapes(model, data_prop=True), len(replaced)
