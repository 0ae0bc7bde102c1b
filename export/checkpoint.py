"""Checkpoint files: find them (cache / Hub), read them safely, detect their key layout, check keys and shapes.

Every failure is a CheckpointError whose message names the file and what is wrong with it.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Iterable, Mapping, Optional, Union

from edgeclip.errors import EdgeclipError
from edgeclip.hub import offline
from edgeclip.paths import edgeclip_home
from quantize.hub_probe import hub_unreachable_reason
from export.registry import (LAYOUT_APPLE, LAYOUT_DEMO, LAYOUT_OPEN_CLIP, LAYOUT_TIMM, LAYOUTS, MODELS, ModelSpec, Source,
                             image_only_variant)

StateDict = dict  # str -> torch.Tensor
SHOWN_KEYS = 5  # how many offending keys an error message lists per kind
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module")
_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
# top-level names of timm's fastvit_mci* and vit_base_mci_224 state_dicts (Apple's timm image-only releases)
_TIMM_ROOTS = frozenset({"stem", "stages", "final_conv", "head", "patch_embed", "blocks", "norm", "cls_token",
                         "pos_embed"})
TIMM_CONFIG = "config.json"  # the timm release's config, next to its weights


class CheckpointError(EdgeclipError):
    """A checkpoint that cannot be found, read, or does not fit the requested model."""


def cache_path(spec: ModelSpec, source: Source) -> Path:
    """Where a released checkpoint of `spec` is looked for without `--checkpoint`."""
    return edgeclip_home() / "checkpoints" / spec.model_id / source.filename


# ---------------------------------------------------------------- reading
def read_checkpoint(path: Union[str, Path]) -> tuple[StateDict, Optional[str]]:
    """(tensors, declared layout) of a `.pt/.pth/.bin` (torch.load, weights_only) or `.safetensors` file.

    Wrappers are removed; the declared layout comes from safetensors metadata `layout` when present.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a file")
    if path.suffix.lower() not in _SUFFIXES:
        raise CheckpointError(f"checkpoint {path.name}: unsupported file type {path.suffix!r} "
                              f"(expected one of {', '.join(_SUFFIXES)})")
    declared = None
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt", device="cpu") as f:
                declared = (f.metadata() or {}).get("layout")
                raw = {k: f.get_tensor(k) for k in f.keys()}
        else:
            import torch

            raw = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, bad header: all reported the same way
        _refuse_code_objects(path, exc)
        size = path.stat().st_size
        raise CheckpointError(
            f"cannot read checkpoint {path.name} ({size} bytes): it is truncated, corrupt or not a plain "
            f"PyTorch/safetensors state_dict ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})"
        ) from None
    return unwrap_state_dict(raw, path.name), (declared if declared in LAYOUTS else None)


def _refuse_code_objects(path: Path, exc: Exception) -> None:
    """Raise CheckpointError in edgeclip's words when torch.load(weights_only=True) refused pickled code objects."""
    if type(exc).__name__ != "UnpicklingError" or "weights only load failed" not in str(exc).lower():
        return
    names = sorted(set(re.findall(r"GLOBAL ([\w.]+)", str(exc))))
    raise CheckpointError(
        f"cannot read checkpoint {path.name}: it holds pickled code objects "
        f"({', '.join(names) or 'Python objects other than tensors'}) that a plain state_dict never needs; edgeclip "
        "refused to unpickle them, since that could run code on this machine, and reads checkpoints as tensors only. "
        "If you trust the file, load it in your own torch session and save just its state_dict "
        "(torch.save(sd, path) or safetensors)") from None


def unwrap_state_dict(raw: object, name: str = "checkpoint") -> StateDict:
    """Strip `{"state_dict": ...}` / `{"model": ...}` wrappers and a DataParallel `module.` prefix."""
    import torch

    for _ in range(3):
        if isinstance(raw, Mapping) and not _all_tensors(raw):
            inner = next((raw[k] for k in _WRAPPER_KEYS if isinstance(raw.get(k), Mapping)), None)
            if inner is None:
                break
            raw = inner
    if not isinstance(raw, Mapping) or not raw:
        raise CheckpointError(f"{name} is not a state_dict (found {type(raw).__name__}); "
                              "expected a mapping of parameter names to tensors")
    tensors = {k: v for k, v in raw.items() if isinstance(v, torch.Tensor)}
    if not tensors or len(tensors) < len(raw):
        bad = [k for k, v in raw.items() if not isinstance(v, torch.Tensor)][:SHOWN_KEYS]
        raise CheckpointError(f"{name} is not a plain state_dict: entries {bad} are not tensors")
    if all(str(k).startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return dict(tensors)


def _all_tensors(d: Mapping) -> bool:
    import torch

    return all(isinstance(v, torch.Tensor) for v in d.values())


# ---------------------------------------------------------------- layouts
def detect_layout(keys: Iterable[str]) -> Optional[str]:
    """`ml-mobileclip` (Apple), `open_clip`, `timm` (image tower alone), or None when the keys look like none."""
    keys = list(keys)
    apple = sum(k.startswith(("image_encoder.", "text_encoder.")) for k in keys)
    oc = sum(k.startswith(("visual.", "text.", "transformer.", "token_embedding")) for k in keys)
    timm = sum(k.split(".", 1)[0] in _TIMM_ROOTS for k in keys)
    if apple and apple >= 0.9 * (len(keys) - 1):
        return LAYOUT_APPLE
    if oc and oc >= 0.9 * (len(keys) - 1):
        return LAYOUT_OPEN_CLIP
    if timm and timm == len(keys):
        return LAYOUT_TIMM
    return None


def spec_for_checkpoint(spec: ModelSpec, keys: Iterable[str], declared: Optional[str] = None) -> ModelSpec:
    """`spec`, or its image-only timm variant when the file is a timm image tower (`--model s0` + a `_timm` file)."""
    if LAYOUT_TIMM in spec.layouts or (declared or detect_layout(keys)) != LAYOUT_TIMM:
        return spec
    return image_only_variant(spec) or spec


def choose_layout(spec: ModelSpec, keys: Iterable[str], name: str, declared: Optional[str] = None) -> str:
    """The layout to load `keys` as for `spec`, or a CheckpointError saying why none fits."""
    if spec.layouts == (LAYOUT_DEMO,) and declared in (None, LAYOUT_DEMO):
        return LAYOUT_DEMO  # demo keys resemble open_clip's; the strict key check decides
    found = declared or detect_layout(keys)
    if found in spec.layouts:
        return found
    what = f"an {found} checkpoint" if found else "a checkpoint whose keys match no known layout"
    hint = ""
    if found == LAYOUT_TIMM:
        timm_ids = [m.model_id for m in MODELS.values() if LAYOUT_TIMM in m.layouts]
        hint = f" (image-only timm checkpoints load as: {', '.join(timm_ids)})"
    raise CheckpointError(f"{name} is {what}, but {spec.model_id} loads only: {', '.join(spec.layouts)}{hint}")


def preprocess_for(spec: ModelSpec, checkpoint: Optional[Path]) -> dict:
    """The bundle's preprocessing: the timm release's own `config.json` beside the weights, else the registry's.

    A config for another architecture, head size or input size is a CheckpointError naming the file.
    """
    config = checkpoint.parent / TIMM_CONFIG if checkpoint is not None else None
    if LAYOUT_TIMM not in spec.layouts or config is None or not config.is_file():
        return spec.preprocess
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
        cfg = data.get("pretrained_cfg") or {}
        arch, classes = data.get("architecture"), int(data.get("num_classes", spec.embed_dim))
        size = int(list(cfg.get("input_size", (3, spec.image_size, spec.image_size)))[-1])
        mode = cfg.get("crop_mode", "center")
        mean, std = (list(map(float, cfg.get(k, d))) for k, d in (("mean", spec.mean_std[0]), ("std", spec.mean_std[1])))
        crop_pct = float(cfg.get("crop_pct", spec.crop_pct))
        interpolation = str(cfg.get("interpolation", spec.interpolation))
    except (OSError, UnicodeDecodeError, ValueError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"cannot read the timm config {config}: {exc}") from None
    wrong = [f"architecture {arch!r} (expected {spec.timm_model!r})" if arch not in (None, spec.timm_model) else "",
             f"num_classes {classes} (expected {spec.embed_dim})" if classes != spec.embed_dim else "",
             f"input size {size} (expected {spec.image_size})" if size != spec.image_size else "",
             f"crop_mode {mode!r} (only 'center' is supported)" if mode != "center" else "",
             f"crop_pct {crop_pct} (expected 0 < crop_pct <= 1)" if not 0 < crop_pct <= 1 else ""]
    if any(wrong):
        raise CheckpointError(f"{config} does not describe {spec.model_id}: " + ", ".join(w for w in wrong if w))
    return {**spec.preprocess, "resize": math.floor(size / crop_pct), "interpolation": interpolation, "mean": mean,
            "std": std}


def check_keys(expected: Mapping[str, tuple], state_dict: Mapping, model_id: str, layout: str, name: str) -> None:
    """Raise ONE CheckpointError listing missing / unexpected / mis-shaped keys if `state_dict` does not fit."""
    got = {k: tuple(v.shape) for k, v in state_dict.items()}
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    misshaped = [(k, got[k], tuple(expected[k])) for k in expected if k in got and got[k] != tuple(expected[k])]
    if not (missing or unexpected or misshaped):
        return
    lines = [f"checkpoint {name} does not fit {model_id} ({layout} layout): expected {len(expected)} tensors, "
             f"file has {len(got)}; {len(missing)} missing, {len(unexpected)} unexpected, {len(misshaped)} mis-shaped"]
    if missing:
        lines.append("  first missing: " + ", ".join(missing[:SHOWN_KEYS]))
    if unexpected:
        lines.append("  first unexpected: " + ", ".join(unexpected[:SHOWN_KEYS]))
    if misshaped:
        lines.append("  first mis-shaped: " + ", ".join(f"{k} file {list(g)} != model {list(e)}"
                                                       for k, g, e in misshaped[:SHOWN_KEYS]))
    lines.append("  Is this the checkpoint of another model? Pass the matching --model.")
    raise CheckpointError("\n".join(lines))


# ---------------------------------------------------------------- resolution
def _download(spec: ModelSpec, source: Source) -> Optional[Path]:
    """Fetch `source` into the cache with huggingface_hub; None when it is not installed or the Hub is unreachable."""
    if offline() or source.repo is None or hub_unreachable_reason():  # huggingface_hub would retry for ~25 s
        return None
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        return None
    target = cache_path(spec, source)
    try:
        got = hf_hub_download(source.repo, source.filename, local_dir=str(target.parent))
    except Exception:  # network down, repo moved, auth: the caller prints the manual instructions
        return None
    if source.layout == LAYOUT_TIMM:  # the release's config.json beside the weights: its preprocessing
        try:
            hf_hub_download(source.repo, TIMM_CONFIG, local_dir=str(target.parent))
        except Exception:  # without it the registry's copy of the same values is used
            pass
    return Path(got)


def resolve_checkpoint(spec: ModelSpec, demo_default: Optional[Path] = None) -> Path:
    """A checkpoint for `spec` when none was given: the cache, else a Hub download, else one clear error."""
    if demo_default is not None:
        if demo_default.is_file():
            return demo_default
        raise CheckpointError(f"the packaged weights {demo_default} are missing; reinstall edgeclip or pass --checkpoint")
    for source in spec.sources:
        if cache_path(spec, source).is_file():
            return cache_path(spec, source)
    for source in spec.sources:
        got = _download(spec, source)
        if got is not None and got.is_file():
            return got
    first = spec.sources[0]
    others = "".join(f"\n  or {s.url} -> {cache_path(spec, s)}" for s in spec.sources[1:] if s.url)
    raise CheckpointError(
        f"no checkpoint for {spec.model_id} in the cache and it could not be downloaded (offline, or huggingface_hub "
        f"missing). Download {first.url}\n  and put it at {cache_path(spec, first)}{others}\n"
        f"  (or pass --checkpoint PATH; the cache root is $EDGECLIP_HOME, now {edgeclip_home()})"
    )
