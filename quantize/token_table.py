"""Token-embedding tables stored INT8 per row (or fp16), gathered without ever building the float table.

The token table (49408 x 512 for MobileCLIP, about 60 % of the text tower's weights) is a lookup, not a
matrix product. One activation-style scale for the whole table (what static Q/DQ gives a Gather) is the wrong
recipe, and ``DequantizeLinear`` over the whole table before the Gather would materialize the float table on
every run (ONNX Runtime does not constant-fold DequantizeLinear while its QDQ optimizations are on). So the
table is stored compactly and only the gathered rows become float:

    int8: Gather(table_int8 [V, C], ids) -> Cast(float) -> Mul(Gather(row_scale [V, 1], ids))
    fp16: Gather(table_fp16 [V, C], ids) -> Cast(float)

INT8 rows have one symmetric scale each (zero point 0): a looked-up value is off by at most half its row's
scale. ``choose_table_storage`` keeps INT8 when the tower, with only its table in INT8, stays well inside
the fidelity goals, and fp16 otherwise. Activations stay float, so the table is not a candidate of the
activation sensitivity search (``quantize.search``); the quantizer applies this rewrite for every target.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from quantize.measure import embed, fidelity
from quantize.session import make_session
from quantize.weight_storage import sqnr_db, symmetric_int8

MIN_ROWS = 1000  # a Gather over a float constant with at least this many rows is a token table
STORAGES = ("int8", "fp16")


def _table_positions(model: onnx.ModelProto, min_rows: int) -> list[int]:
    inits = {t.name: t for t in model.graph.initializer}
    out = []
    for k, node in enumerate(model.graph.node):
        if node.op_type != "Gather" or node.domain not in ("", "ai.onnx"):
            continue
        table = inits.get(node.input[0])
        axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 0)
        if table is not None and table.data_type == onnx.TensorProto.FLOAT and len(table.dims) == 2 \
                and table.dims[0] >= min_rows and table.dims[1] > 1 and axis == 0:  # not a [V, 1] row scale
            out.append(k)
    return out


def token_table_nodes(model: onnx.ModelProto, min_rows: int = MIN_ROWS) -> list[onnx.NodeProto]:
    """Gather nodes (axis 0) that look rows up in a float [V, C] initializer (V >= ``min_rows``, C > 1)."""
    return [model.graph.node[k] for k in _table_positions(model, min_rows)]


def _lookup(node: onnx.NodeProto, table: np.ndarray, storage: str) -> tuple[list, list, np.ndarray]:
    """(initializers, nodes, table as the graph will see it) for one table lookup in ``storage``."""
    base, ids, out, name = node.name or node.output[0], node.input[1], node.output[0], node.input[0]
    if storage == "fp16":
        half = table.astype(np.float16)
        return ([numpy_helper.from_array(half, f"{name}_fp16")],
                [helper.make_node("Gather", [f"{name}_fp16", ids], [f"{base}_fp16"], name=f"{base}_fp16", axis=0),
                 helper.make_node("Cast", [f"{base}_fp16"], [out], name=f"{base}_cast", to=onnx.TensorProto.FLOAT)],
                half.astype(np.float64))
    q, scale = symmetric_int8(table, axis=0)
    q_name, s_name = f"{name}_int8_rows", f"{name}_row_scale"
    return ([numpy_helper.from_array(q, q_name), numpy_helper.from_array(scale, s_name)],
            [helper.make_node("Gather", [q_name, ids], [f"{base}_int8"], name=f"{base}_int8", axis=0),
             helper.make_node("Cast", [f"{base}_int8"], [f"{base}_cast"], name=f"{base}_cast",
                              to=onnx.TensorProto.FLOAT),
             helper.make_node("Gather", [s_name, ids], [f"{base}_scale"], name=f"{base}_scale", axis=0),
             helper.make_node("Mul", [f"{base}_cast", f"{base}_scale"], [out], name=f"{base}_rescale")],
            q.astype(np.float64) * scale)


def compress_token_tables(model: onnx.ModelProto, storage: str = "int8",
                          min_rows: int = MIN_ROWS) -> tuple[onnx.ModelProto, list[dict]]:
    """Rewrite every token-table Gather to look rows up in an INT8-per-row or fp16 table (module docstring).

    Changes ``model`` in place; returns it and one record per table (node, shape, storage, bytes before and
    after, table SQNR in dB). A float table no other node reads is removed.
    """
    if storage not in STORAGES:
        raise ValueError(f"token table storage must be one of {STORAGES}, not {storage!r}")
    graph = model.graph
    found = _table_positions(model, min_rows)
    inits = {t.name: t for t in graph.initializer}
    replaced, records, tables = {}, [], set()
    for k in found:
        node = graph.node[k]
        table = numpy_helper.to_array(inits[node.input[0]])
        new_inits, replaced[k], seen = _lookup(node, table, storage)
        graph.initializer.extend(new_inits)
        tables.add(node.input[0])
        records.append({"node": node.name, "tensor": node.input[0], "shape": [int(d) for d in table.shape],
                        "storage": storage, "float_bytes": int(table.nbytes),
                        "stored_bytes": int(sum(numpy_helper.to_array(t).nbytes for t in new_inits)),
                        "sqnr_db": sqnr_db(table, seen)})
    if not found:
        return model, []
    nodes = [m for k, n in enumerate(graph.node) for m in replaced.get(k, [n])]
    del graph.node[:]
    graph.node.extend(nodes)
    still_read = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    kept = [t for t in graph.initializer if t.name not in tables or t.name in still_read]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    kept_inputs = [i for i in graph.input if i.name not in tables or i.name in still_read]
    del graph.input[:]
    graph.input.extend(kept_inputs)
    return model, records


def choose_table_storage(fp32_path: Path, out_path: Path, feeds: list[dict], reference: np.ndarray,
                         min_cos: float, min_centered: float) -> tuple[str, list[dict], dict | None]:
    """Write ``fp32_path`` with its token tables compressed to ``out_path``; returns (storage, records, metrics).

    INT8 rows are kept when the tower with only its tables in INT8 uses at most half of the fidelity budget on
    ``feeds`` (1 - mean cos <= (1 - min_cos) / 2, likewise for the centered cosine), leaving the other half to
    the int8 nodes; otherwise fp16. ``metrics`` is the INT8-table tower's fidelity (None without a table).
    """
    model, records = compress_token_tables(onnx.load(str(fp32_path)), "int8")
    if not records:
        onnx.save(model, str(out_path))
        return "none", [], None
    onnx.save(model, str(out_path))
    metrics = fidelity(reference, embed(make_session(out_path), feeds))
    if 1 - metrics["mean_cos"] <= (1 - min_cos) / 2 and 1 - metrics["centered_mean_cos"] <= (1 - min_centered) / 2:
        return "int8", records, metrics
    model, records = compress_token_tables(onnx.load(str(fp32_path)), "fp16")
    onnx.save(model, str(out_path))
    return "fp16", records, metrics
