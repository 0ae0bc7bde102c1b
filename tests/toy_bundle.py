"""One builder of toy edgeclip bundles (docs/bundle.md) for the tests; each test folder brings its own tower graphs.

`write_toy_bundle` reads every tower's manifest entry off its ONNX graph (input/output names, shapes, dtypes,
opset, fixed or dynamic batch), adds the tokenizer with a text tower and writes the bundle with the project's
own atomic writer (edgeclip.bundle.write, torch-free), which fills the sha256s and verifies with load_bundle.
Import it as `tests.toy_bundle` (pyproject puts the repo root on sys.path).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import pytest

NEEDS_ONNX = "building test bundles needs the `onnx` package (pip install onnx; `make install` brings it)"
onnx = pytest.importorskip("onnx", reason=NEEDS_ONNX)
from onnx import helper  # noqa: E402

OPSET = 17
IR_VERSION = 8  # readable by onnxruntime >= 1.20
Tower = Union[onnx.ModelProto, str, Path]


def checked_model(graph: onnx.GraphProto, producer: Optional[str] = None) -> onnx.ModelProto:
    """Wrap a graph as an opset-17, IR-8 model (loadable by onnxruntime >= 1.20) and validate it."""
    named = {"producer_name": producer} if producer else {}
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], **named)
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def preprocess_spec(size: int, interpolation: str = "bilinear", mean: Sequence[float] = (0.0, 0.0, 0.0),
                    std: Sequence[float] = (1.0, 1.0, 1.0)) -> dict:
    """A manifest preprocess section: resize the short side to `size`, centre-crop `size`."""
    return {"size": size, "resize": size, "resize_mode": "shortest", "interpolation": interpolation,
            "crop": "center", "crop_size": size, "mean": list(mean), "std": list(std)}


def _value_info(value: onnx.ValueInfoProto) -> dict:
    dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value.type.tensor_type.shape.dim]
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)).name
    return {"name": value.name, "shape": dims, "dtype": dtype}


def tower_entry(model: onnx.ModelProto, file: str, gelu: str = "exact", precision: str = "fp32") -> dict:
    """A manifest tower entry read off the graph (first input and output); sha256 is filled by the writer."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = [_value_info(v) for v in model.graph.input if v.name not in initializers]
    outputs = [_value_info(model.graph.output[0])]
    batch = inputs[0]["shape"][0]
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return {"file": file, "sha256": None, "precision": precision, "opset": opset,
            "batch": batch if isinstance(batch, int) else "dynamic", "gelu": gelu,
            "inputs": inputs, "outputs": outputs}


def write_toy_bundle(
    out_dir: Union[str, Path],
    *,
    image: Optional[Tower] = None,
    text: Optional[Tower] = None,
    embed_dim: int,
    gelu: str = "exact",
    preprocess: Optional[dict] = None,
    tokenizer_json: Optional[Path] = None,
    model_id: str = "tiny-test",
) -> Path:
    """Write a complete bundle with the given towers (models or .onnx paths) into out_dir and return its path.

    preprocess defaults to `preprocess_spec` of the image input's size; a text tower brings the CLIP
    tokenizer.json (edgeclip's own unless `tokenizer_json`) with the context length of its input.
    """
    from edgeclip.tokenizer import tokenizer_json_path
    from edgeclip.bundle.write import write_bundle

    manifest: dict = {"model_id": model_id, "created_by": "tests/toy_bundle.py", "source_checkpoint": None,
                      "embed_dim": embed_dim, "towers": {}, "preprocess": preprocess, "tokenizer": None,
                      "quantization": None, "device_readiness": None, "extra_files": {}}
    with tempfile.TemporaryDirectory(prefix="toy-bundle-") as tmp:
        files: dict = {}
        for name, tower in (("image", image), ("text", text)):
            if tower is None:
                continue
            if isinstance(tower, onnx.ModelProto):
                model, path = tower, Path(tmp) / f"{name}.onnx"
                onnx.save(model, str(path))
            else:
                model, path = onnx.load(str(tower)), Path(tower)
            files[f"{name}.onnx"] = path
            manifest["towers"][name] = tower_entry(model, f"{name}.onnx", gelu)
        if "image" in manifest["towers"] and preprocess is None:
            manifest["preprocess"] = preprocess_spec(int(manifest["towers"]["image"]["inputs"][0]["shape"][-1]))
        if "text" in manifest["towers"]:
            files["tokenizer.json"] = tokenizer_json or tokenizer_json_path()
            manifest["tokenizer"] = {"file": "tokenizer.json", "sha256": None,
                                     "context_length": manifest["towers"]["text"]["inputs"][0]["shape"][1],
                                     "sot_id": 49406, "eot_id": 49407, "pad_id": 0}
        return write_bundle(out_dir, manifest, files)
