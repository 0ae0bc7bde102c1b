"""How a graph splits between an execution provider and the CPU EP: partitions, hand-overs, MAC share.

Works on the shape-inferred graph that ``runtime.readiness`` analyses. Multiply-accumulates are counted for
the ops that carry them (Conv, ConvTranspose, MatMul, Gemm and their integer forms) at batch 1: a dimension
that shape inference leaves unknown counts as 1. A *partition* is a maximal set of provider nodes connected
by tensors that stay on the provider; a *hand-over* is a tensor that crosses between the provider and the
CPU EP (graph inputs and outputs count as CPU side). XNNPACK runs Conv, ConvTranspose, pools and Resize in NHWC, so a 4-D hand-over from a partition that
holds such a node costs a layout change (a Transpose ORT inserts) as well.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

NHWC_OPS = {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "Resize", "QLinearConv"}
_CONV_OPS = {"Conv", "ConvInteger", "QLinearConv"}
_MATMUL_OPS = {"MatMul", "MatMulInteger", "QLinearMatMul", "Gemm"}


def _shapes(model: Any) -> dict[str, list[int]]:
    """Every known tensor shape of the graph, unknown dims as 1 (batch 1)."""
    graph = model.graph
    shapes = {t.name: [int(d) for d in t.dims] for t in graph.initializer}
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            shapes[vi.name] = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1
                               for d in vi.type.tensor_type.shape.dim]
    return shapes


def _prod(dims: Iterable[int]) -> int:
    out = 1
    for d in dims:
        out *= int(d)
    return out


def node_attr(node: Any, name: str, default: Any) -> Any:
    """The value of attribute `name` of an ONNX node, or `default`."""
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def name_nodes(model: Any) -> None:
    """Give every unnamed node a unique name, since provider coverage keys nodes by name."""
    for i, node in enumerate(model.graph.node):
        node.name = node.name or f"_node{i}"


def node_macs(node: Any, shapes: dict[str, list[int]]) -> int:
    """Multiply-accumulates of one node at batch 1 (0 for ops without a contraction or unknown shapes)."""
    op = node.op_type
    if op in _CONV_OPS or op == "ConvTranspose":
        w_name = node.input[3] if op == "QLinearConv" else node.input[1]
        out, w = shapes.get(node.output[0]), shapes.get(w_name)
        x = shapes.get(node.input[0])
        if w is None or len(w) < 3:
            return 0
        if op == "ConvTranspose":
            return _prod(x) * _prod(w[1:]) if x else 0
        return _prod(out) * _prod(w[1:]) if out else 0
    if op in _MATMUL_OPS:
        a_name = node.input[0]
        a, out = shapes.get(a_name), shapes.get(node.output[0])
        if not a or not out:
            return 0
        k = a[-2] if op == "Gemm" and node_attr(node, "transA", 0) and len(a) >= 2 else a[-1]
        return _prod(out) * int(k)
    return 0


def split_stats(model: Any, on_provider: set[str], layout_sensitive: bool) -> dict[str, Any]:
    """Partitions, hand-overs and MAC share of the nodes named in ``on_provider`` (every node must have a name).

    ``layout_sensitive``: the provider runs NHWC ops (XNNPACK), so 4-D hand-overs out of a partition holding one
    are counted as layout changes too.
    """
    nodes = list(model.graph.node)
    shapes = _shapes(model)
    producer = {out: n.name for n in nodes for out in n.output if out}
    by_name = {n.name: n for n in nodes}

    parent = {name: name for name in on_provider}

    def find(name: str) -> str:
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    crossings: set[tuple[str, str]] = set()  # (tensor, provider-side node)
    for node in nodes:
        for tensor in node.input:
            src = producer.get(tensor)
            if src is None:
                continue
            inside_src, inside_dst = src in on_provider, node.name in on_provider
            if inside_src and inside_dst:
                parent[find(src)] = find(node.name)
            elif inside_src != inside_dst:
                crossings.add((tensor, src if inside_src else node.name))
    initializers = {t.name for t in model.graph.initializer}
    graph_inputs = {i.name for i in model.graph.input} - initializers
    crossings |= {(t, n.name) for n in nodes if n.name in on_provider for t in n.input if t in graph_inputs}
    crossings |= {(o.name, producer[o.name]) for o in model.graph.output if producer.get(o.name) in on_provider}
    groups: dict[str, list[str]] = defaultdict(list)
    for name in on_provider:
        groups[find(name)].append(name)
    nhwc_roots = {find(n) for n in on_provider if by_name[n].op_type in NHWC_OPS}
    layout_changes = sum(
        1 for tensor, inside in crossings
        if layout_sensitive and find(inside) in nhwc_roots and len(shapes.get(tensor, [])) == 4
    )
    macs = {n.name: node_macs(n, shapes) for n in nodes}
    total = sum(macs.values())
    taken = sum(macs[n] for n in on_provider)
    return {
        "partitions": len(groups),
        "partition_sizes": sorted((len(g) for g in groups.values()), reverse=True),
        "handovers": len({t for t, _ in crossings}),
        "layout_changes": layout_changes,
        "macs_total": total,
        "macs_on_provider": taken,
        "mac_share": round(taken / total, 4) if total else None,
    }
