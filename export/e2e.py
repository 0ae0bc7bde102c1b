"""Self-contained app graphs (onnxruntime-extensions): encoded image bytes -> embedding, string -> embedding.

``image_e2e.onnx`` decodes (extensions' DecodeImage, RGB), resizes the short side (antialiased
bilinear, like Pillow), centre-crops and scales in-graph, then runs the image tower.
``text_e2e.onnx`` tokenizes with the extensions' CLIPTokenizer, forces every id after the first
end-of-text to the pad id 0 (the tower attends to pads and finds eot by argmax), enforces OpenCLIP's
truncation (last id = eot), then runs the text tower. Both output the tower's unnormalized embedding.
Apps load them with ORT + the extensions library (see docs/devices.md).
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgeclip.bundle import load_bundle
from edgeclip.errors import EdgeclipError
from edgeclip.zeroshot import l2_normalize
from edgeclip.bundle.write import install_file, write_manifest

CONTRIB = "ai.onnx.contrib"          # CLIPTokenizer
EXTENSIONS = "com.microsoft.extensions"  # DecodeImage
IMAGE_OPSET = 18                     # Resize(antialias=1, axes=...) needs opset 18
# In-graph text fixes before CLIPTokenizer (ECMAScript regex, global replace), each closing a measured gap:
TEXT_REWRITES = [
    (r"<\|endoftext\|>[\s\S]*", ""),  # a literal <|endoftext|> mid-text crashes CLIPTokenizer (0.15.2)
    ("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&#39;", "'"),  # OpenCLIP's html.unescape
    (r"\s+", " "),                       # OpenCLIP's whitespace_clean (tabs/newlines/runs of spaces)
    (r"(\d)(?=\d)", "$1 "),               # OpenCLIP splits numbers into single digits; the op does not
]
SPECIAL_NAMES = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}


class E2EError(EdgeclipError):
    """An e2e graph could not be built (missing onnxruntime-extensions, unsupported bundle, bad tokenizer)."""


def _onnx():
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as exc:  # pragma: no cover
        raise E2EError("building e2e graphs needs the 'onnx' package: pip install onnx") from exc
    return onnx, TensorProto, helper, numpy_helper


def extensions_library() -> str:
    """Path of the onnxruntime-extensions custom-op library (for SessionOptions.register_custom_ops_library)."""
    try:
        from onnxruntime_extensions import get_library_path
    except ImportError as exc:
        raise E2EError("e2e graphs need onnxruntime-extensions: pip install onnxruntime-extensions") from exc
    return get_library_path()


def e2e_session(path: str | Path, threads: int = 1):
    """An ORT CPU session for an e2e graph, with the extensions' custom ops registered."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.register_custom_ops_library(extensions_library())
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def clip_tokenizer_attributes(tokenizer_json: str | Path) -> dict[str, str]:
    """``vocab``/``merges`` attributes of CLIPTokenizer from a HF tokenizer.json (special tokens renamed)."""
    data = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))
    model = data.get("model") or {}
    if model.get("type") != "BPE" or "vocab" not in model or "merges" not in model:
        raise E2EError(f"{tokenizer_json} is not a BPE tokenizer.json with vocab and merges")
    vocab = {SPECIAL_NAMES.get(tok, tok): idx for tok, idx in model["vocab"].items()}
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return {"vocab": json.dumps(vocab, separators=(",", ":"), ensure_ascii=False), "merges": "\n".join(merges)}


def _model(nodes: list, inputs: list, outputs: list, inits: list, opset: int, extra_domain: str):
    onnx, _, helper, _ = _onnx()
    graph = helper.make_graph(nodes, "e2e_pre", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(extra_domain, 1)])
    return model


def text_preprocess(tokenizer_json: str | Path, context_length: int = 77, eot: int = 49407, pad: int = 0,
                    opset: int = 17) -> Any:
    """Graph ``text`` (string [N]) -> ``e2e_input_ids`` (int64 [N, context]) matching OpenCLIP's ids."""
    _, TensorProto, helper, numpy_helper = _onnx()
    c = lambda name, value: numpy_helper.from_array(np.asarray(value, dtype=np.int64), name)  # noqa: E731
    last = np.zeros((1, context_length), np.int64)
    last[0, -1] = 1
    inits = [c("e2e_eot", eot), c("e2e_pad", pad), c("e2e_one", 1), c("e2e_zero", 0), c("e2e_axis1", 1),
             c("e2e_last_onehot", last), c("e2e_m1", [-1]), c("e2e_end", [context_length]), c("e2e_ax", [1])]
    nodes, text = [], "text"
    for k, (pattern, rewrite) in enumerate(TEXT_REWRITES):
        inits += [numpy_helper.from_array(np.array([pattern], dtype=object), f"e2e_pattern{k}"),
                  numpy_helper.from_array(np.array([rewrite], dtype=object), f"e2e_rewrite{k}")]
        nodes.append(helper.make_node("StringECMARegexReplace", [text, f"e2e_pattern{k}", f"e2e_rewrite{k}"],
                                      [f"e2e_text{k}"], domain=CONTRIB))
        text = f"e2e_text{k}"
    nodes += [
        helper.make_node("CLIPTokenizer", [text], ["e2e_raw", "e2e_mask"], domain=CONTRIB,
                         padding_length=context_length, **clip_tokenizer_attributes(tokenizer_json)),
        helper.make_node("Equal", ["e2e_raw", "e2e_eot"], ["e2e_is_eot_b"]),
        helper.make_node("Cast", ["e2e_is_eot_b"], ["e2e_is_eot"], to=TensorProto.INT64),
        helper.make_node("CumSum", ["e2e_is_eot", "e2e_axis1"], ["e2e_cum"]),
        helper.make_node("Sub", ["e2e_cum", "e2e_is_eot"], ["e2e_after"]),       # > 0 strictly after the first eot
        helper.make_node("Equal", ["e2e_after", "e2e_zero"], ["e2e_keep"]),
        helper.make_node("Where", ["e2e_keep", "e2e_raw", "e2e_pad"], ["e2e_ids0"]),
        helper.make_node("Slice", ["e2e_cum", "e2e_m1", "e2e_end", "e2e_ax"], ["e2e_total"]),  # eot count per row
        helper.make_node("Equal", ["e2e_total", "e2e_zero"], ["e2e_no_eot_b"]),  # truncated: no eot was kept
        helper.make_node("Cast", ["e2e_no_eot_b"], ["e2e_no_eot"], to=TensorProto.INT64),
        helper.make_node("Mul", ["e2e_no_eot", "e2e_last_onehot"], ["e2e_fix"]),
        helper.make_node("Sub", ["e2e_one", "e2e_fix"], ["e2e_keepcol"]),
        helper.make_node("Mul", ["e2e_ids0", "e2e_keepcol"], ["e2e_ids1"]),
        helper.make_node("Mul", ["e2e_fix", "e2e_eot"], ["e2e_eotcol"]),
        helper.make_node("Add", ["e2e_ids1", "e2e_eotcol"], ["e2e_input_ids"]),
    ]
    return _model(nodes, [helper.make_tensor_value_info("text", TensorProto.STRING, ["n"])],
                  [helper.make_tensor_value_info("e2e_input_ids", TensorProto.INT64, ["n", context_length])],
                  inits, opset, CONTRIB)


def image_preprocess(spec: dict) -> Any:
    """Graph ``image_bytes`` (uint8 [bytes]) -> ``e2e_image`` (float32 [1, 3, S, S]) per a manifest preprocess spec."""
    _, TensorProto, helper, numpy_helper = _onnx()
    if spec.get("resize_mode", "shortest") != "shortest" or spec.get("crop", "center") != "center":
        raise E2EError("image_e2e supports resize_mode 'shortest' with a center crop only")
    if str(spec.get("interpolation", "bilinear")).lower() != "bilinear":
        raise E2EError(f"image_e2e supports bilinear interpolation only, not {spec.get('interpolation')!r}")
    size = int(spec.get("size"))
    resize, crop = int(spec.get("resize", size)), int(spec.get("crop_size", size))
    f = lambda name, value: numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)  # noqa: E731
    i = lambda name, value: numpy_helper.from_array(np.asarray(value, dtype=np.int64), name)  # noqa: E731
    inits = [i("e2e_i0", [0]), i("e2e_i1", [1]), i("e2e_resize", [resize]), i("e2e_crop", [crop]),
             i("e2e_axes01", [0, 1]), i("e2e_axis0", [0]), f("e2e_two", 2.0), f("e2e_255", 255.0), f("e2e_zero_f", 0.0),
             f("e2e_mean", spec.get("mean", [0, 0, 0])), f("e2e_std", spec.get("std", [1, 1, 1]))]
    n = helper.make_node
    nodes = [
        n("DecodeImage", ["image_bytes"], ["e2e_hwc"], domain=EXTENSIONS, color_space="rgb"),
        n("Shape", ["e2e_hwc"], ["e2e_shape"]),
        n("Gather", ["e2e_shape", "e2e_i0"], ["e2e_h"]),
        n("Gather", ["e2e_shape", "e2e_i1"], ["e2e_w"]),
        n("Min", ["e2e_h", "e2e_w"], ["e2e_short"]),
        n("Mul", ["e2e_h", "e2e_resize"], ["e2e_rh"]),
        n("Div", ["e2e_rh", "e2e_short"], ["e2e_new_h"]),   # int(size * long / short), as torchvision/Pillow path
        n("Mul", ["e2e_w", "e2e_resize"], ["e2e_rw"]),
        n("Div", ["e2e_rw", "e2e_short"], ["e2e_new_w"]),
        n("Concat", ["e2e_new_h", "e2e_new_w"], ["e2e_sizes"], axis=0),
        n("Cast", ["e2e_hwc"], ["e2e_hwc_f"], to=TensorProto.FLOAT),
        n("Resize", ["e2e_hwc_f", "", "", "e2e_sizes"], ["e2e_resized_f"], mode="linear", antialias=1,
          axes=[0, 1], coordinate_transformation_mode="half_pixel"),
        n("Round", ["e2e_resized_f"], ["e2e_rounded"]),     # Pillow resizes 8-bit images to 8-bit
        n("Clip", ["e2e_rounded", "e2e_zero_f", "e2e_255"], ["e2e_resized"]),
        n("Sub", ["e2e_new_h", "e2e_crop"], ["e2e_dh"]),
        n("Sub", ["e2e_new_w", "e2e_crop"], ["e2e_dw"]),
        n("Concat", ["e2e_dh", "e2e_dw"], ["e2e_d"], axis=0),
        n("Cast", ["e2e_d"], ["e2e_d_f"], to=TensorProto.FLOAT),
        n("Div", ["e2e_d_f", "e2e_two"], ["e2e_half"]),
        n("Round", ["e2e_half"], ["e2e_start_f"]),          # round-half-even, like Python's round()
        n("Cast", ["e2e_start_f"], ["e2e_start"], to=TensorProto.INT64),
        n("Add", ["e2e_start", "e2e_crop"], ["e2e_stop"]),
        n("Slice", ["e2e_resized", "e2e_start", "e2e_stop", "e2e_axes01"], ["e2e_cropped"]),
        n("Div", ["e2e_cropped", "e2e_255"], ["e2e_unit"]),
        n("Sub", ["e2e_unit", "e2e_mean"], ["e2e_centered"]),
        n("Div", ["e2e_centered", "e2e_std"], ["e2e_norm"]),
        n("Transpose", ["e2e_norm"], ["e2e_chw"], perm=[2, 0, 1]),
        n("Unsqueeze", ["e2e_chw", "e2e_axis0"], ["e2e_image"]),
    ]
    return _model(nodes, [helper.make_tensor_value_info("image_bytes", TensorProto.UINT8, ["bytes"])],
                  [helper.make_tensor_value_info("e2e_image", TensorProto.FLOAT, [1, 3, crop, crop])],
                  inits, IMAGE_OPSET, EXTENSIONS)


def _default_opset(model: Any) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _attach(pre: Any, tower_path: Path, pre_out: str, tower_in: str, opset: int | None) -> Any:
    """Prepend a preprocessing graph to a tower (tower upgraded to ``opset`` when given and newer)."""
    onnx, _, helper, _ = _onnx()
    from onnx import compose, version_converter

    tower = onnx.load(str(tower_path))
    if opset is not None and _default_opset(tower) < opset:
        try:
            tower = version_converter.convert_version(tower, opset)
        except Exception as exc:
            raise E2EError(f"cannot convert {tower_path.name} to opset {opset} for the e2e graph: {exc}") from exc
    pre.ir_version = tower.ir_version
    for imp in tower.opset_import:  # give the preprocessing the tower's other domains too
        if imp.domain not in {o.domain for o in pre.opset_import}:
            pre.opset_import.append(helper.make_opsetid(imp.domain, imp.version))
    merged = compose.merge_models(pre, tower, io_map=[(pre_out, tower_in)])
    onnx.checker.check_model(merged)
    return merged


def build_text_e2e(bundle_dir: str | Path) -> Any:
    """``text_e2e`` model for a bundle's text tower: input ``text`` (string [N]) -> the tower's embedding."""
    bundle = load_bundle(bundle_dir, verify=True)
    tower = bundle.towers.get("text")
    if tower is None:
        raise E2EError(f"bundle {bundle.root} has no text tower")
    if tower.get("batch", "dynamic") not in ("dynamic", 1):
        raise E2EError(f"text_e2e needs a dynamic or batch-1 text tower, not batch {tower.get('batch')!r}")
    tok = bundle.manifest.get("tokenizer") or {}
    if bundle.tokenizer_path is None:
        raise E2EError(f"bundle {bundle.root} names no tokenizer.json")
    pre = text_preprocess(bundle.tokenizer_path, bundle.context_length, int(tok.get("eot_id", 49407)),
                          int(tok.get("pad_id", 0)), opset=int(tower.get("opset", 17)))
    return _attach(pre, bundle.tower_path("text"), "e2e_input_ids", tower["inputs"][0]["name"], None)


def build_image_e2e(bundle_dir: str | Path) -> Any:
    """``image_e2e`` model for a bundle's image tower: input ``image_bytes`` (uint8 [n]) -> embedding [1, D]."""
    bundle = load_bundle(bundle_dir, verify=True)
    tower = bundle.towers.get("image")
    if tower is None:
        raise E2EError(f"bundle {bundle.root} has no image tower")
    batch = tower.get("batch", "dynamic")
    if batch not in ("dynamic", 1):
        raise E2EError(f"image_e2e takes one image; the tower's batch is {batch!r} (need dynamic or 1)")
    pre = image_preprocess(bundle.preprocess)
    return _attach(pre, bundle.tower_path("image"), "e2e_image", tower["inputs"][0]["name"], IMAGE_OPSET)


def add_e2e(bundle_dir: str | Path, towers: Sequence[str] = ("image", "text")) -> dict[str, Any]:
    """Write ``<tower>_e2e.onnx`` into the bundle and list it under ``towers.<tower>.alternates.e2e``."""
    onnx, *_ = _onnx()
    import onnxruntime_extensions

    bundle = load_bundle(bundle_dir, verify=True)
    root = bundle.root
    builders = {"image": (build_image_e2e, "image_bytes", "uint8 [bytes] (encoded JPEG/PNG)"),
                "text": (build_text_e2e, "text", "string [N]")}
    manifest = copy.deepcopy(bundle.manifest)  # amended below, then written atomically
    summary: dict[str, Any] = {"bundle": str(root), "onnxruntime_extensions": onnxruntime_extensions.__version__}
    with tempfile.TemporaryDirectory(dir=root, prefix=".e2e-") as tmp:
        for name in towers:
            if name not in builders:
                raise E2EError(f"unknown tower {name!r}; choose image and/or text")
            build, input_name, input_desc = builders[name]
            staged = Path(tmp) / f"{name}_e2e.onnx"
            onnx.save(build(root), str(staged))
            entry = {"file": staged.name, "sha256": install_file(staged, root, staged.name),
                     "input": {"name": input_name, "type": input_desc},
                     "requires": f"onnxruntime-extensions>={onnxruntime_extensions.__version__}"}
            manifest["towers"][name].setdefault("alternates", {})["e2e"] = entry
            summary[name] = entry
        write_manifest(root, manifest)
    return summary


# ---- measurement: where the e2e graphs differ from the Python path -------------------------------------------

_SUBJECTS = ["dog", "cat", "man", "woman", "child", "car", "bus", "train", "bird", "horse", "boat", "pizza",
             "laptop", "bicycle", "cup of coffee", "red apple", "old building", "mountain", "river", "skateboarder"]
_ADJ = ["small", "large", "red", "blue", "happy", "old", "young", "wooden", "shiny", "dark", "bright", "wet"]
_PLACES = ["on the beach", "in a park", "at night", "in the kitchen", "on a city street", "next to a lake",
           "in the snow", "under a tree", "at the airport", "inside a museum", "on top of a hill"]
_VERBS = ["sitting", "running", "standing", "sleeping", "jumping", "parked", "waiting", "playing", "looking out"]


def ordinary_captions(n: int = 1000, seed: int = 0) -> list[str]:
    """Deterministic ordinary ASCII captions (mixed case, punctuation, numbers, contractions)."""
    rng = random.Random(seed)
    out = []
    for k in range(n):
        subj = f"{rng.choice(_ADJ)} {rng.choice(_SUBJECTS)}"
        forms = [
            f"a photo of a {subj}",
            f"A {subj} {rng.choice(_VERBS)} {rng.choice(_PLACES)}.",
            f"{rng.randint(2, 12)} {rng.choice(_SUBJECTS)}s {rng.choice(_PLACES)}",
            f"There's a {subj} {rng.choice(_PLACES)}, isn't it lovely?",
            f"Close-up of the {subj}; taken in {rng.randint(1990, 2024)}!",
            f"{subj.title()} {rng.choice(_VERBS)} {rng.choice(_PLACES)} (photo #{rng.randint(1, 999)})",
        ]
        out.append(forms[k % len(forms)])
    return out


def measure(bundle_dir: str | Path, golden: str | Path | None = None, images: Sequence[str | Path] = (),
            captions: int = 1000) -> dict[str, Any]:
    """Agreement of the e2e graphs with edgeclip's Python path (ids, golden rows, image/text cosines)."""
    from edgeclip import Encoder
    from runtime.session import run_batched

    bundle = load_bundle(bundle_dir, verify=True)
    result: dict[str, Any] = {}
    alts = {name: (t.get("alternates") or {}).get("e2e") for name, t in bundle.towers.items()}
    if alts.get("text"):
        enc = Encoder(bundle.root, providers="cpu", threads=1)
        tok_only = e2e_session_ids(bundle)
        caps = ordinary_captions(captions)
        ref = enc.tokenize(caps)
        ids = tokenize_one_by_one(tok_only, caps)
        batched = tok_only.run(None, {"text": np.array(caps, dtype=object)})[0]
        rows_equal = np.all(ids == ref, axis=1)
        result["captions"] = {"n": len(caps), "ids_equal": int(rows_equal.sum()),
                              "batched_ids_equal": int(np.all(batched == ref, axis=1).sum()),
                              "examples_differing": [caps[i] for i in np.flatnonzero(~rows_equal)[:5]]}
        if golden:
            cases = json.loads(Path(golden).read_text(encoding="utf-8"))["cases"]
            g_ids = tokenize_one_by_one(tok_only, [c["text"] for c in cases])
            g_equal = [bool(np.array_equal(g_ids[i], c["ids"])) for i, c in enumerate(cases)]
            result["golden"] = {"n": len(cases), "ids_equal": sum(g_equal),
                                "differing": [c["text"][:40] for c, ok in zip(cases, g_equal) if not ok]}
        sess = e2e_session(bundle.root / alts["text"]["file"])
        few = caps[:16]
        batch = bundle.towers["text"].get("batch", "dynamic")  # a fixed-batch tower is fed chunks of its batch
        e2e_emb = _unit(run_batched(sess, "text", sess.get_outputs()[0].name, np.array(few, dtype=object),
                                    batch if isinstance(batch, int) and not isinstance(batch, bool) else None,
                                    "text_e2e graph"))
        result["text_min_cos"] = float(np.min(np.sum(e2e_emb * enc.encode_text(few), axis=1)))
    if alts.get("image") and images:
        enc = Encoder(bundle.root, providers="cpu", threads=1)
        sess = e2e_session(bundle.root / alts["image"]["file"])
        cos = {}
        for path in images:
            data = np.frombuffer(Path(path).read_bytes(), dtype=np.uint8)
            e2e = _unit(sess.run(None, {"image_bytes": data})[0])
            cos[Path(path).name] = float(np.sum(e2e * enc.encode_image([str(path)]), axis=1)[0])
        result["image_cos"] = cos
    return result


def tokenize_one_by_one(session: Any, texts: Sequence[str]) -> np.ndarray:
    """Token ids one string per run: in a batch, a truncated row leaks into the next one (extensions 0.15.2)."""
    return np.concatenate([session.run(None, {"text": np.array([t], dtype=object)})[0] for t in texts])


def _unit(x: np.ndarray) -> np.ndarray:
    return l2_normalize(x, x.dtype.type)


def e2e_session_ids(bundle) -> Any:
    """A session of the text preprocessing alone (string -> ids), to compare ids with the Python tokenizer."""
    tok = bundle.manifest.get("tokenizer") or {}
    pre = text_preprocess(bundle.tokenizer_path, bundle.context_length, int(tok.get("eot_id", 49407)),
                          int(tok.get("pad_id", 0)))
    pre.ir_version = 8
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tok.onnx"
        _onnx()[0].save(pre, str(path))
        return e2e_session(path)


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m export.e2e BUNDLE [--towers image text] [--measure [--golden F] [--images ...]] [--json]``."""
    parser = argparse.ArgumentParser(
        prog="python -m export.e2e",
        description="Add self-contained e2e graphs (image bytes -> embedding, string -> embedding; need "
        "onnxruntime-extensions at run time) to a bundle, and optionally measure them against edgeclip's "
        "Python preprocessing and tokenizer.",
    )
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--towers", nargs="+", default=["image", "text"], choices=["image", "text"])
    parser.add_argument("--measure", action="store_true", help="compare with the Python path after writing")
    parser.add_argument("--golden", type=Path, help="tokenizer golden JSON (cases with text and ids)")
    parser.add_argument("--images", nargs="*", default=[], type=Path, help="image files for the image comparison")
    parser.add_argument("--captions", type=int, default=1000, help="number of generated ASCII captions")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    missing = [str(f) for f in [*args.images, *([args.golden] if args.golden else [])] if not f.is_file()]
    if missing:  # checked before the bundle is touched
        parser.error(f"file not found: {', '.join(missing)}")
    try:
        summary = add_e2e(args.bundle, args.towers)
        if args.measure:
            summary["measure"] = measure(args.bundle, args.golden, args.images, args.captions)
    except EdgeclipError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in summary.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
