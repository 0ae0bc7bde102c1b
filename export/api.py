"""The build side's public API: `load_checkpoint`, `build_model`, `export_bundle` (docs/bundle.md describes the output)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import torch
from torch import nn

import edgeclip
from edgeclip.bundle import sha256_file
from edgeclip.bundle.write import check_output, work_dir, write_bundle
from edgeclip.tokenizer.constants import EOT_ID, PAD_ID, SOT_ID
from export.checkpoint import (CheckpointError, check_keys, choose_layout, preprocess_for, read_checkpoint,
                               resolve_checkpoint, spec_for_checkpoint, unwrap_state_dict)
from export.models.demo_config import DEMO_WEIGHTS
from export.onnx_export import (ExportError, Tower, check_graph, compare, convert_to_fp16, eot_pooling,
                                export_tower, sample_inputs, use_tanh_gelu, validate)
from export.reparam import executed_modules, reparameterize as reparameterize_in_place
from export.registry import LAYOUT_APPLE, LAYOUT_DEMO, LAYOUT_OPEN_CLIP, LAYOUT_TIMM, VIT_STEMS, ModelSpec, get_spec

CheckpointArg = Union[None, str, Path, dict]
DEFAULT_OPSET = 17
# opset 17 exports LayerNormalization, which NNAPI lacks; at 16 the exporter decomposes it into supported ops
NNAPI_OPSET = 16


@dataclass(frozen=True)
class ExportOptions:
    """Graph shape, GELU form and opset of one export, after defaults and the NNAPI preset are applied."""

    batch: Union[str, int]
    gelu: str
    opset: int
    nnapi: bool

    @property
    def preset(self) -> str:
        return "nnapi" if self.nnapi else "default"


def resolve_options(nnapi: bool = False, batch: Union[None, str, int] = None, gelu: Optional[str] = None,
                    opset: Optional[int] = None) -> ExportOptions:
    """Fill unset options: dynamic batch, exact GELU, opset 17; with `nnapi` batch 1, tanh GELU, opset 16.

    With `nnapi`, an explicit choice NNAPI cannot run in one partition (dynamic batch, exact GELU,
    opset >= 17) is an ExportError rather than a silently split graph.
    """
    if batch is None:
        batch = 1 if nnapi else "dynamic"
    if batch != "dynamic" and not (isinstance(batch, int) and not isinstance(batch, bool) and batch >= 1):
        raise ExportError(f"batch must be 'dynamic' or a positive integer, not {batch!r}")
    gelu = gelu or ("tanh" if nnapi else "exact")
    if gelu not in ("exact", "tanh"):
        raise ExportError(f"gelu must be 'exact' or 'tanh', not {gelu!r}")
    opset = (NNAPI_OPSET if nnapi else DEFAULT_OPSET) if opset is None else opset
    if not (isinstance(opset, int) and not isinstance(opset, bool) and opset >= 1):
        raise ExportError(f"opset must be a positive integer, not {opset!r}")
    if nnapi:
        wrong = [f"batch={batch!r} (NNAPI needs a fixed batch)" if batch == "dynamic" else "",
                 "gelu='exact' (Erf is no NNAPI op)" if gelu == "exact" else "",
                 f"opset={opset} (opset >= 17 keeps LayerNormalization, no NNAPI op)" if opset > NNAPI_OPSET else ""]
        if any(wrong):
            raise ExportError("an NNAPI export cannot use " + ", ".join(w for w in wrong if w))
    return ExportOptions(batch, gelu, opset, nnapi)


@dataclass
class LoadedCheckpoint:
    """A checkpoint's tensors with where they came from and which key layout they use."""

    state_dict: dict
    layout: str
    name: str
    sha256: Optional[str]
    path: Optional[Path]
    model_id: str  # the model it loads as: the requested one, or its timm image-only variant for a timm file

    def describe(self) -> dict:
        """The manifest's `source_checkpoint` block."""
        return {"file": self.name, "sha256": self.sha256, "layout": self.layout}


def load_checkpoint(model_id: str, checkpoint: CheckpointArg = None) -> LoadedCheckpoint:
    """Read (or find, when None) a checkpoint for `model_id` and detect its layout; CheckpointError if unusable."""
    spec = get_spec(model_id)
    declared = None
    if isinstance(checkpoint, dict):
        sd, name, digest, path = unwrap_state_dict(checkpoint, "the given state_dict"), "<state_dict>", None, None
    else:
        if checkpoint is None:
            path = resolve_checkpoint(spec, DEMO_WEIGHTS if spec.layouts == (LAYOUT_DEMO,) else None)
        else:
            path = Path(checkpoint).expanduser()
        sd, declared = read_checkpoint(path)
        name, digest = path.name, sha256_file(path)
    spec = spec_for_checkpoint(spec, sd, declared)
    return LoadedCheckpoint(sd, choose_layout(spec, sd, name, declared), name, digest, path, spec.model_id)


def vit_stem_for(spec: ModelSpec, vit_stem: Optional[str] = None) -> Optional[str]:
    """The ViT-B conv stem to build (`vit_stem`, default the one the weights were trained with); None for others."""
    if vit_stem is None:
        return spec.vit_stem
    if spec.vit_stem is None:
        raise ExportError(f"{spec.model_id} has no ViT-B CLIP image tower: the stem choice {vit_stem!r} does not apply")
    if vit_stem not in VIT_STEMS:
        raise ExportError(f"vit_stem must be one of {', '.join(VIT_STEMS)}, not {vit_stem!r}")
    if spec.timm_model and vit_stem != spec.vit_stem:
        raise ExportError(f"{spec.model_id} is timm's {spec.timm_model}, which has only the {spec.vit_stem} stem")
    return vit_stem


def _construct(spec: ModelSpec, layout: str, vit_stem: Optional[str] = None) -> nn.Module:
    """An untrained model whose parameters the checkpoint of `layout` fills (built on the current device)."""
    if layout == LAYOUT_OPEN_CLIP:
        from export.models.openclip import build_open_clip_model

        return build_open_clip_model(spec, vit_stem)
    if layout == LAYOUT_APPLE:
        from export.models.apple import build_apple_model

        return build_apple_model(spec.model_id, vit_stem)
    if layout == LAYOUT_TIMM:
        from export.models.timm_image import build_timm_image_model

        return build_timm_image_model(spec)
    from export.models.demo import build_demo_model

    return build_demo_model(checkpoint=None)


def _assign(model: nn.Module, sd: dict) -> bool:
    """Give a meta-built model the checkpoint's tensors (strict); False if some tensor would stay unallocated."""
    sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    model.load_state_dict(sd, strict=True, assign=True)
    for module in model.modules():  # OpenCLIP's causal mask is a non-persistent buffer: rebuild it
        mask = module._buffers.get("attn_mask")
        if mask is not None and mask.is_meta and hasattr(module, "build_causal_mask"):
            with torch.device("cpu"):
                module.register_buffer("attn_mask", module.build_causal_mask(), persistent=False)
    return not any(t.is_meta for t in list(model.parameters()) + list(model.buffers()))


def _fit(spec: ModelSpec, model: nn.Module, ckpt: LoadedCheckpoint) -> dict:
    """Check `ckpt` against what `model` expects (one clear error) and return the model-layout state_dict."""
    sd = ckpt.state_dict
    if ckpt.layout == LAYOUT_APPLE:
        from export.models.apple import apple_checkpoint_keys, convert_apple_state_dict

        check_keys(dict(apple_checkpoint_keys(spec.model_id)), sd, spec.model_id, ckpt.layout, ckpt.name)
        return convert_apple_state_dict(spec.model_id, sd)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_keys(expected, sd, spec.model_id, ckpt.layout, ckpt.name)
    return sd


def _load(spec: ModelSpec, ckpt: LoadedCheckpoint, vit_stem: Optional[str] = None) -> nn.Module:
    """Build the model and fill it from `ckpt` (one clear CheckpointError if it does not fit).

    OpenCLIP and timm models are built on `meta` and get the checkpoint's tensors assigned: their random init
    would cost seconds for nothing. The other builders run on CPU.
    """
    on_meta = ckpt.layout in (LAYOUT_OPEN_CLIP, LAYOUT_TIMM)
    with torch.device("meta" if on_meta else "cpu"):
        model = _construct(spec, ckpt.layout, vit_stem_for(spec, vit_stem))
    sd = _fit(spec, model, ckpt)
    try:
        if not on_meta:
            model.load_state_dict(sd, strict=True)
        elif not _assign(model, sd):
            raise RuntimeError("some tensors of the model are provided neither by the checkpoint nor by the builder")
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {ckpt.name} does not load into {spec.model_id}: {str(exc)[:600]}") from None
    return model.eval()


def build_model(model_id: str, checkpoint: CheckpointArg = None, reparameterize: bool = True,
                vit_stem: Optional[str] = None) -> nn.Module:
    """The model in eval mode; `encode_image(x)` / `encode_text(ids)` return UNNORMALIZED embeddings.

    `vit_stem` ("padded" / "unpadded", ViT-B CLIP models only) overrides the stem the weights were trained with.
    """
    ckpt = load_checkpoint(model_id, checkpoint)
    model = _load(get_spec(ckpt.model_id), ckpt, vit_stem)
    return reparameterize_in_place(model) if reparameterize else model


def _progress(callback: Optional[Callable[[str], None]], message: str) -> None:
    if callback is not None:
        callback(message)


def _tokenizer_json() -> Path:
    try:
        from edgeclip.tokenizer import tokenizer_json_path
    except ImportError as exc:
        raise ExportError(f"edgeclip.tokenizer.tokenizer_json_path is unavailable ({exc}); cannot ship tokenizer.json") from None
    path = Path(tokenizer_json_path())
    if not path.is_file():
        raise ExportError(f"the packaged tokenizer {path} is missing")
    return path


def _readiness(path: Path) -> dict:
    """NNAPI and XNNPACK partitioning of a fixed-shape graph (`runtime.readiness.tower_summary`)."""
    try:
        from runtime.readiness import tower_summary

        return tower_summary(path)
    except Exception as exc:  # the analysis is informative; a failure is recorded, not fatal to the export
        return {"nnapi": None, "xnnpack": None, "error": f"{type(exc).__name__}: {exc}"}


def _module_counts(model: nn.Module, spec: ModelSpec, towers: Sequence[str]) -> dict:
    """Leaf modules each tower runs on one sample (before/after reparameterization is what the manifest shows)."""
    out = {}
    for tower in towers:
        x = torch.from_numpy(sample_inputs(tower, 1, spec.image_size, spec.context_length))
        out[tower] = executed_modules(model, lambda: Tower(model, tower)(x))
    return out


def export_bundle(model_id: str, out_dir: Union[str, Path], checkpoint: CheckpointArg = None,
                  batch: Union[None, str, int] = None, gelu: Optional[str] = None, opset: Optional[int] = None,
                  precision: str = "fp32", towers: Optional[Sequence[str]] = None,
                  progress: Optional[Callable[[str], None]] = None, nnapi: bool = False,
                  strict: bool = True, vit_stem: Optional[str] = None) -> Path:
    """Export a reparameterized, validated fp32/fp16 bundle to `out_dir` atomically; return the bundle dir.

    Unset batch/gelu/opset default to dynamic/exact/17; `nnapi=True` makes them 1/tanh/16, the graphs
    NNAPI runs in one partition (see `resolve_options`). A graph outside the parity limits is an ExportError;
    with `strict=False` it is kept and its manifest parity entry says `passed: false` (for latency-only uses).
    `towers` defaults to every tower the checkpoint has (the image tower alone for a timm image-only file).
    `vit_stem` (ViT-B CLIP models): "padded" (Apple's network) or "unpadded" (timm's); default: as trained.
    """
    spec = get_spec(model_id)
    options = resolve_options(nnapi, batch, gelu, opset)
    batch, gelu, opset = options.batch, options.gelu, options.opset
    if precision not in ("fp32", "fp16"):
        raise ExportError(f"precision must be fp32 or fp16, not {precision!r}")
    towers = tuple(dict.fromkeys(towers)) if towers is not None else None
    if towers is not None and (not towers or any(t not in ("image", "text") for t in towers)):
        raise ExportError(f"towers must be a non-empty subset of ('image', 'text'), not {towers!r}")
    check_output(out_dir)  # refuse an output that is in the way before minutes of work
    started = time.perf_counter()
    _progress(progress, "loading checkpoint")
    ckpt = load_checkpoint(spec.model_id, checkpoint)
    spec = get_spec(ckpt.model_id)
    towers = _towers_of(spec, ckpt, towers)
    _progress(progress, f"building {spec.model_id} ({ckpt.layout} layout) and reparameterizing")
    vit_stem = vit_stem_for(spec, vit_stem)
    model = _load(spec, ckpt, vit_stem)
    before = _module_counts(model, spec, towers)
    reparameterize_in_place(model)
    after = _module_counts(model, spec, towers)
    gelu_info = _apply_gelu(model, spec, gelu, towers)
    n_check = 2 if batch == "dynamic" else int(batch)
    manifest_towers, readiness, files = {}, {}, {}
    with work_dir(out_dir) as tmp:
        for tower in towers:
            path = Path(tmp) / f"{tower}.onnx"
            _progress(progress, f"exporting the {tower} tower")
            io = export_tower(model, tower, path, spec.image_size, batch, opset, spec.context_length)
            stats = check_graph(path)
            converter = convert_to_fp16(path) if precision == "fp16" else None
            if converter:
                stats = check_graph(path)
            _progress(progress, f"validating the {tower} tower with ONNX Runtime")
            parity = validate(path, model, tower, n_check, spec.image_size, precision, spec.context_length, strict)
            entry = {"file": path.name, "sha256": None, "precision": precision, "opset": opset, "batch": batch,
                     "gelu": gelu, **io,
                     "node_counts": {"torch_modules_before_reparam": before[tower]["leaf_modules"],
                                     "torch_batchnorm_before_reparam": before[tower]["batchnorm_modules"],
                                     "torch_modules_after_reparam": after[tower]["leaf_modules"],
                                     "torch_batchnorm_after_reparam": after[tower]["batchnorm_modules"], **stats},
                     "parity": parity, "exporter": f"torch.onnx TorchScript exporter (torch {torch.__version__})"}
            if tower == "text":
                entry["eot_pooling"] = eot_pooling(path)
            if tower in gelu_info:
                entry["gelu_tanh_change"] = gelu_info[tower]
            if converter:
                entry["fp16_converter"] = converter
            manifest_towers[tower] = entry
            files[path.name] = path
            if batch != "dynamic":
                readiness[tower] = _readiness(path)
        manifest = {
            "model_id": spec.model_id,
            "created_by": f"edgeclip {edgeclip.__version__} export",
            "export_preset": options.preset,
            "source_checkpoint": ckpt.describe(),
            "embed_dim": int(next(iter(manifest_towers.values()))["outputs"][0]["shape"][1]),
            "logit_scale": _logit_scale(model),
            "towers": manifest_towers,
            "image_stem": vit_stem if "image" in towers else None,
            "preprocess": preprocess_for(spec, ckpt.path),
            "tokenizer": None,
            "quantization": None,
            "device_readiness": readiness or None,
            "export_seconds": None,
        }
        if "text" in towers:
            files["tokenizer.json"] = _tokenizer_json()
            manifest["tokenizer"] = {"file": "tokenizer.json", "sha256": None, "context_length": spec.context_length,
                                     "sot_id": SOT_ID, "eot_id": EOT_ID, "pad_id": PAD_ID}
        _progress(progress, "writing the bundle")
        manifest["export_seconds"] = round(time.perf_counter() - started, 1)
        return write_bundle(out_dir, manifest, files)


def _towers_of(spec: ModelSpec, ckpt: LoadedCheckpoint, towers: Optional[tuple]) -> tuple:
    """The towers to export: all the model has when None; a tower the checkpoint lacks is an ExportError."""
    missing = [t for t in towers or () if t not in spec.towers]
    if missing:
        raise ExportError(f"{ckpt.name} is an image-only {ckpt.layout} checkpoint ({spec.model_id}): it has no "
                          f"{' or '.join(missing)} tower. Export it with --towers image, or use the CLIP release "
                          f"(both towers) for text embeddings")
    return towers or spec.towers


def _logit_scale(model: nn.Module) -> Optional[float]:
    """exp(logit_scale) of a CLIP model (the zero-shot temperature), None if it has none."""
    scale = getattr(model, "logit_scale", None)
    return round(float(scale.detach().exp()), 4) if isinstance(scale, torch.Tensor) else None


def _apply_gelu(model: nn.Module, spec: ModelSpec, gelu: str, towers: Sequence[str]) -> dict:
    """With gelu='tanh', swap nn.GELU modules and record how much each tower's torch output moved."""
    if gelu != "tanh":
        return {}
    samples = {t: torch.from_numpy(sample_inputs(t, 2, spec.image_size, spec.context_length)) for t in towers}
    with torch.no_grad():
        exact = {t: Tower(model, t)(x).numpy() for t, x in samples.items()}
        swapped = use_tanh_gelu(model)
        return {t: {**compare(Tower(model, t)(x).numpy(), exact[t]), "gelu_modules_swapped": swapped}
                for t, x in samples.items()}
