"""The manifest.json schema: every field's type, range and allowed values, checked whole when a bundle loads.

A bad field raises BundleError naming the manifest and the field as a dotted path (`towers.image.inputs`,
`preprocess.mean`), so nothing later trips over a string where a dict belongs. Unknown fields are allowed
(newer writers may add some). Also here: the rule that every file a bundle names lies inside its folder.
"""
from __future__ import annotations

import math
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Optional

import numpy as np

from edgeclip.errors import BundleError
from edgeclip.preprocess import INTERPOLATIONS, MODES

FORMAT_NAME = "edgeclip-bundle"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
TOWERS = ("image", "text")
DEFAULT_CONTEXT_LENGTH = 77  # tokens per text when the manifest's tokenizer block does not say (CLIP's)
PRECISIONS = ("fp32", "fp16", "int8")
GELUS = ("exact", "tanh")
MAX_DIM = 1 << 16  # embed_dim, image sizes, context length, batch: anything above is a typo or an attack
MAX_LOGIT_SCALE = 1e4
MAX_PIXEL_STAT, MIN_STD = 1e4, 1e-4  # preprocess mean/std bounds: [0, 1] or [0, 255] scales fit well inside
MAX_TOKEN_ID = (1 << 31) - 1
_ABSENT = object()


class _Fields:
    """Checks for one manifest; each failure names `where` (the manifest path) and the dotted field.

    A check gets the field's value or _ABSENT (key missing: the reader's default applies). A present null is
    refused unless `nullable`, because readers use `.get(key, default)`, which returns the null, not the default.
    """

    def __init__(self, where: Path):
        self.where = where

    def fail(self, field: str, problem: str, value: Any = _ABSENT) -> None:
        got = "" if value is _ABSENT else f", got {_show(value)}"
        raise BundleError(f"{self.where}: {field} {problem}{got}")

    def obj(self, value: Any, field: str, nullable: bool = True) -> dict:
        if value is _ABSENT or (value is None and nullable):
            return {}
        if not isinstance(value, dict):
            self.fail(field, "must be a JSON object" + (" or null" if nullable else ""), value)
        return value

    def seq(self, value: Any, field: str, length: Optional[int] = None, nonempty: bool = False) -> list:
        if not isinstance(value, list) or (nonempty and not value):
            self.fail(field, "must be a " + ("non-empty " if nonempty else "") + "JSON list", value)
        if length is not None and len(value) != length:
            self.fail(field, f"must list {length} values", value)
        return value

    def text(self, value: Any, field: str, choices: Optional[Iterable[str]] = None, nullable: bool = False) -> Any:
        if value is _ABSENT or (value is None and nullable):
            return None
        if not isinstance(value, str) or not value:
            self.fail(field, "must be a non-empty string", value)
        if choices is not None and value not in tuple(choices):
            self.fail(field, f"must be one of {', '.join(choices)}", value)
        return value

    def integer(self, value: Any, field: str, lo: int = 1, hi: int = MAX_DIM, nullable: bool = False) -> Any:
        if value is _ABSENT or (value is None and nullable):
            return None
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            self.fail(field, f"must be an integer from {lo} to {hi}", value)
        return value

    def number(self, value: Any, field: str, lo: float, hi: float, nullable: bool = False) -> Any:
        """A finite number in [lo, hi] (lo itself excluded when it is 0: scales and std must be positive)."""
        if value is _ABSENT or (value is None and nullable):
            return None
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or not lo <= value <= hi or (lo == 0 and value == 0):
            self.fail(field, f"must be a number from {lo:g} to {hi:g}" + (" (not 0)" if lo == 0 else ""), value)
        return float(value)

    def sha256(self, value: Any, field: str) -> None:
        if value is _ABSENT or value is None:  # verify_files names a missing sha256
            return
        if not isinstance(value, str) or len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            self.fail(field, "must be a sha256 of 64 lowercase hex digits", value)

    def file(self, value: Any, field: str) -> str:
        """A file name inside the bundle: a relative POSIX path without '..' or backslashes."""
        if not isinstance(value, str) or not value:
            self.fail(field, "must name a file in the bundle (a non-empty string)", value)
        rel = PurePosixPath(value)
        if rel.is_absolute() or ".." in rel.parts or "\\" in value or value.startswith("~"):
            self.fail(field, f"names {value!r}, which points outside the bundle")
        return value


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_manifest(manifest: Any, where: Path) -> None:
    """Validate a whole parsed manifest (docs/bundle.md); BundleError naming `where` and the first bad field."""
    f = _Fields(where)
    f.obj(manifest, "the manifest", nullable=False)
    _check_top(f, manifest)
    towers = manifest.get("towers")
    if not isinstance(towers, dict) or not towers:
        f.fail("towers", f"must name at least one of {', '.join(TOWERS)}", towers)
    for name, tower in towers.items():
        if name not in TOWERS:
            f.fail(f"towers.{name}", f"is not a known tower (expected {', '.join(TOWERS)})")
        _check_tower(f, tower, f"towers.{name}")
    if "image" in towers and not isinstance(manifest.get("preprocess"), dict):
        f.fail("preprocess", "must be a JSON object: an image tower needs it", manifest.get("preprocess"))
    _check_preprocess(f, manifest.get("preprocess", _ABSENT), "image" in towers)
    _check_tokenizer(f, manifest.get("tokenizer", _ABSENT))
    extra = f.obj(manifest.get("extra_files", _ABSENT), "extra_files")
    for name, digest in extra.items():
        f.file(name, f"extra_files[{name!r}]")
        if digest is None:
            f.fail(f"extra_files[{name!r}]", "must record the file's sha256", digest)
        f.sha256(digest, f"extra_files[{name!r}]")


def _check_top(f: _Fields, m: dict) -> None:
    fmt = m.get("format")
    if fmt is not None and fmt != FORMAT_NAME:
        f.fail("format", f"is {fmt!r}, expected {FORMAT_NAME!r}")
    version = m.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        f.fail("format_version", "is missing or not an integer", version)
    if version > FORMAT_VERSION:
        raise BundleError(
            f"bundle {f.where.parent} uses format version {version}, but this edgeclip reads up to version "
            f"{FORMAT_VERSION}; upgrade edgeclip (pip install -U edgeclip) or re-export the bundle")
    f.integer(version, "format_version", lo=1, hi=FORMAT_VERSION)
    for key in ("model_id", "created_by", "export_preset"):
        f.text(m.get(key, _ABSENT), key, nullable=True)
    f.integer(m.get("embed_dim", _ABSENT), "embed_dim", nullable=True)
    f.number(m.get("logit_scale", _ABSENT), "logit_scale", 0, MAX_LOGIT_SCALE, nullable=True)
    for key in ("source_checkpoint", "device_readiness"):
        f.obj(m.get(key, _ABSENT), key)
    quant = f.obj(m.get("quantization", _ABSENT), "quantization")
    f.text(quant.get("target", _ABSENT), "quantization.target", nullable=True)


def _check_tower(f: _Fields, tower: Any, field: str) -> None:
    tower = f.obj(tower, field, nullable=False)
    f.file(tower.get("file"), f"{field}.file")
    f.sha256(tower.get("sha256"), f"{field}.sha256")
    f.text(tower.get("precision", _ABSENT), f"{field}.precision", PRECISIONS)
    f.text(tower.get("gelu", _ABSENT), f"{field}.gelu", GELUS)
    f.text(tower.get("eot_pooling", _ABSENT), f"{field}.eot_pooling", nullable=True)
    f.integer(tower.get("opset", _ABSENT), f"{field}.opset", hi=1000)
    batch = tower.get("batch", _ABSENT)
    if batch is not _ABSENT and batch != "dynamic":
        if not isinstance(batch, int) or isinstance(batch, bool) or not 1 <= batch <= MAX_DIM:
            f.fail(f"{field}.batch", f"must be 'dynamic' or an integer from 1 to {MAX_DIM}", batch)
    for key in ("inputs", "outputs"):
        value = tower.get(key, _ABSENT)
        if key == "outputs" and value is _ABSENT:
            continue
        for i, spec in enumerate(f.seq(value, f"{field}.{key}", nonempty=True)):
            _check_tensor(f, spec, f"{field}.{key}.{i}")
    for key in ("node_counts", "parity"):
        f.obj(tower.get(key, _ABSENT), f"{field}.{key}")
    alternates = f.obj(tower.get("alternates", _ABSENT), f"{field}.alternates", nullable=False)
    for name, alt in alternates.items():
        alt = f.obj(alt, f"{field}.alternates.{name}", nullable=False)
        f.file(alt.get("file"), f"{field}.alternates.{name}.file")
        f.sha256(alt.get("sha256"), f"{field}.alternates.{name}.sha256")


def _check_tensor(f: _Fields, spec: Any, field: str) -> None:
    spec = f.obj(spec, field, nullable=False)
    f.text(spec.get("name", _ABSENT), f"{field}.name")
    shape = spec.get("shape", _ABSENT)
    if shape is not _ABSENT:
        for i, dim in enumerate(f.seq(shape, f"{field}.shape")):
            if isinstance(dim, str) and dim:
                continue
            f.integer(dim, f"{field}.shape.{i}", lo=0)
    dtype = f.text(spec.get("dtype", _ABSENT), f"{field}.dtype")
    if dtype is not None:
        try:
            np.dtype(dtype)
        except TypeError:
            f.fail(f"{field}.dtype", "is not a numpy dtype name such as float32 or int64", dtype)


def _check_preprocess(f: _Fields, pp: Any, image_tower: bool) -> None:
    pp = f.obj(pp, "preprocess")
    if not pp and not image_tower:
        return
    if "size" not in pp:
        f.fail("preprocess.size", "is missing")
    size = f.integer(pp["size"], "preprocess.size")
    resize = f.integer(pp.get("resize", _ABSENT), "preprocess.resize") or size
    crop = f.integer(pp.get("crop_size", _ABSENT), "preprocess.crop_size") or size
    if crop > resize:
        f.fail("preprocess.crop_size", f"must not exceed resize ({resize})", crop)
    f.text(pp.get("resize_mode", _ABSENT), "preprocess.resize_mode", ("shortest",))
    f.text(pp.get("crop", _ABSENT), "preprocess.crop", ("center",))
    f.text(pp.get("interpolation", _ABSENT), "preprocess.interpolation", sorted(INTERPOLATIONS))
    f.text(pp.get("mode", _ABSENT), "preprocess.mode", MODES)
    for key, (lo, hi) in (("mean", (-MAX_PIXEL_STAT, MAX_PIXEL_STAT)), ("std", (0, MAX_PIXEL_STAT))):
        if key not in pp:
            continue
        for i, v in enumerate(f.seq(pp[key], f"preprocess.{key}", length=3)):
            f.number(v, f"preprocess.{key}.{i}", lo, hi)
            if key == "std" and abs(v) < MIN_STD:
                f.fail(f"preprocess.std.{i}", f"must be at least {MIN_STD:g}", v)


def _check_tokenizer(f: _Fields, tok: Any) -> None:
    tok = f.obj(tok, "tokenizer")
    if tok.get("file") is not None:
        f.file(tok["file"], "tokenizer.file")
    f.sha256(tok.get("sha256"), "tokenizer.sha256")
    f.integer(tok.get("context_length", _ABSENT), "tokenizer.context_length", lo=2)
    for key in ("sot_id", "eot_id", "pad_id"):
        f.integer(tok.get(key, _ABSENT), f"tokenizer.{key}", lo=0, hi=MAX_TOKEN_ID)


def check_inside(root: Path, names: Iterable[str]) -> None:
    """Refuse any named file whose real path (symlinks resolved) lies outside the bundle folder.

    The message names only the bundle file, never where it leads: nothing about outside files is revealed.
    A Hugging Face cache snapshot (`.../snapshots/<commit>`) holds symlinks into its repo's `blobs` folder,
    which counts as inside.
    """
    real_root = root.resolve()
    allowed = [real_root]
    if real_root.parent.name == "snapshots":
        allowed.append(real_root.parent.parent / "blobs")
    for name in [MANIFEST_NAME, *names]:
        try:
            real = (root / name).resolve()
        except (OSError, RuntimeError):  # a symlink loop
            raise BundleError(f"bundle {root}: {name} is a symlink that cannot be resolved; refused") from None
        if not any(real == top or top in real.parents for top in allowed):
            raise BundleError(f"bundle {root}: {name} resolves outside the bundle folder (a symlink out of it?); "
                              f"refused. Copy the file into the bundle instead")


__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "MANIFEST_NAME", "TOWERS", "check_inside", "check_manifest"]
