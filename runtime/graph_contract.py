"""What a manifest declares about a tower, checked against the ONNX graph that ONNX Runtime opened.

Input/output names, dtypes and shapes, the fixed batch, `embed_dim`, the image crop size and the tokenizer's
context length are all facts the graph knows too; a manifest that disagrees is refused with a BundleError
naming the field, instead of returning arrays of the wrong size later.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import numpy as np

from edgeclip.bundle import Bundle, load_bundle
from edgeclip.errors import BundleError

# ONNX Runtime's type strings -> numpy dtype names (the manifest's "dtype" vocabulary).
_ORT_DTYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
    "tensor(bool)": "bool", "tensor(string)": "str",
}


def _static(shape: Sequence[Any], axis: int) -> Optional[int]:
    """The graph's size along `axis` when it is a fixed number (symbolic and unknown dims give None)."""
    try:
        dim = shape[axis]
    except IndexError:
        return None
    return dim if isinstance(dim, int) and not isinstance(dim, bool) and dim > 0 else None


def _compare(what: str, field: str, declared: dict, graph: Any) -> None:
    """One manifest tensor entry (name, dtype, shape) against one graph input/output."""
    name = declared.get("name")
    if name is not None and name != graph.name:
        raise BundleError(f"{what}: {field}.name is {name!r} but the graph's tensor is {graph.name!r}")
    dtype = declared.get("dtype")
    have = _ORT_DTYPES.get(graph.type, graph.type)
    if dtype is not None and np.dtype(dtype).name != have:
        raise BundleError(f"{what}: {field}.dtype is {dtype!r} but the graph's {graph.name!r} is {have}")
    shape = declared.get("shape")
    if shape is None or graph.shape is None:
        return
    if len(shape) != len(graph.shape):
        raise BundleError(f"{what}: {field}.shape {shape} has {len(shape)} dims but the graph's {graph.name!r} "
                          f"has {len(graph.shape)} ({list(graph.shape)})")
    for axis, dim in enumerate(shape):
        fixed = _static(graph.shape, axis)
        if isinstance(dim, int) and dim > 0 and fixed is not None and dim != fixed:
            raise BundleError(f"{what}: {field}.shape {shape} but the graph's {graph.name!r} is {list(graph.shape)}")


def check_tower_graph(bundle: Bundle, name: str, session: Any) -> Optional[int]:
    """Refuse a manifest that disagrees with tower `name`'s graph (an open ORT session); BundleError naming the field.

    Returns the graph's embedding size when it is static (None when the graph leaves it symbolic).
    """
    spec = bundle.towers[name]
    what = f"bundle {bundle.root}: {name} tower"
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or not outputs:
        raise BundleError(f"{what}: the graph must have one input and an output, it has {len(inputs)} inputs "
                          f"and {len(outputs)} outputs")
    graph_in = inputs[0]
    _compare(what, f"towers.{name}.inputs.0", spec["inputs"][0], graph_in)
    declared_out = (spec.get("outputs") or [{}])[0]
    out_name = declared_out.get("name", outputs[0].name)
    graph_out = next((o for o in outputs if o.name == out_name), None)
    if graph_out is None:
        raise BundleError(f"{what}: towers.{name}.outputs.0.name is {out_name!r} but the graph's outputs are "
                          f"{[o.name for o in outputs]}")
    _compare(what, f"towers.{name}.outputs.0", declared_out, graph_out)

    batch = spec.get("batch", "dynamic")
    if isinstance(batch, int) and _static(graph_in.shape, 0) != batch:
        raise BundleError(f"{what}: the manifest says batch {batch}, the graph takes "
                          f"{graph_in.shape[0] if graph_in.shape else '?'} (towers.{name}.batch)")
    dim = _static(graph_out.shape or [], -1)
    if dim is not None and bundle.embed_dim is not None and dim != bundle.embed_dim:
        raise BundleError(f"{what}: embed_dim is {bundle.embed_dim} but the graph's output {out_name!r} has "
                          f"{dim} values per row")
    if name == "image":
        crop = bundle.preprocess.get("crop_size", bundle.preprocess.get("size"))
        sides = [_static(graph_in.shape or [], axis) for axis in (2, 3)]
        if crop is not None and any(side not in (None, crop) for side in sides):
            raise BundleError(f"{what}: the graph expects {sides[0] or '?'}x{sides[1] or '?'} inputs but preprocess "
                              f"crops to {crop} (preprocess.crop_size)")
    if name == "text":
        context = bundle.context_length
        tokens = _static(graph_in.shape or [], 1)
        if tokens is not None and tokens != context:
            raise BundleError(f"{what}: tokenizer.context_length is {context} but the graph takes {tokens} tokens")
    return dim


def check_bundle_graphs(bundle: Union[str, Bundle]) -> dict:
    """Open every tower (its .onnx file, else its .ort alternate) on the CPU provider and check it with
    `check_tower_graph`; returns {tower: embedding size}."""
    from runtime.session import create_session

    bundle = load_bundle(bundle, verify=False)
    dims = {}
    for name, spec in bundle.towers.items():
        try:
            session, _ = create_session(bundle.tower_path(name), "cpu", threads=1, precision=spec.get("precision"))
        except BundleError:
            if bundle.ort_path(name) is None:  # a minimal ONNX Runtime build loads only the .ort alternate
                raise
            session, _ = create_session(bundle.ort_path(name), "cpu", threads=1, precision=spec.get("precision"))
        dims[name] = check_tower_graph(bundle, name, session)
    return dims


__all__ = ["check_bundle_graphs", "check_tower_graph"]
