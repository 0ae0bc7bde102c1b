"""Accuracy for the benchmark report: zero-shot top-1 on a class folder or retrieval top-1 on shards; cosine vs fp32.

The device side cannot import the build side's data code, so evaluation data arrives as plain files:
- an ImageNet-style folder: one subfolder per class, images inside; prompts "a photo of a {class}."
  (folder names with `_` read as spaces). An optional `prompts.json` at the top overrides this:
  `{"templates": ["a photo of a {}."], "classes": {"folder": "display name" | ["prompt", ...]}}`;
- reinforced-dataset shards (webdataset `.tar`, image + `txt` caption per key): image -> caption
  retrieval top-1 among the loaded samples (captions play the part of the classes).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

from edgeclip.shards import IMAGE_EXTS, ReadStats, iter_samples
from edgeclip.zeroshot import l2_normalize

DEFAULT_TEMPLATE = "a photo of a {}."


class EvalDataError(ValueError):
    """The evaluation folder or shards cannot be read as an evaluation set."""


@dataclass
class EvalSet:
    """Images with a label each, and the prompts of every label."""

    kind: str  # "zero-shot" (folder) or "retrieval" (shards)
    source: str
    images: list[Union[Path, bytes]]
    labels: np.ndarray  # int, one per image
    prompts: list[list[str]]  # per label


def load_eval_set(path: Union[str, Path], limit: Optional[int] = None) -> EvalSet:
    """Read a class folder, a shard folder or a single `.tar` shard (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise EvalDataError(f"evaluation data not found: {path}")
    if path.is_file() and path.suffix == ".tar":
        return _from_shards([path], limit)
    if path.is_dir() and any(path.glob("*.tar")):
        return _from_shards(sorted(path.glob("*.tar")), limit)
    if path.is_dir():
        return _from_folder(path, limit)
    raise EvalDataError(f"{path} is neither a class folder nor .tar shards")


def _from_folder(root: Path, limit: Optional[int]) -> EvalSet:
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(classes) < 2:
        raise EvalDataError(f"{root}: need at least two class subfolders, found {len(classes)}")
    config = {}
    if (root / "prompts.json").exists():
        try:
            config = json.loads((root / "prompts.json").read_text())
        except json.JSONDecodeError as exc:
            raise EvalDataError(f"{root / 'prompts.json'}: not valid JSON ({exc})") from exc
    templates = config.get("templates", [DEFAULT_TEMPLATE])
    overrides = config.get("classes", {})
    prompts = []
    for name in classes:
        given = overrides.get(name, name.replace("_", " "))
        prompts.append(list(given) if isinstance(given, list) else [t.format(given) for t in templates])
    per_class = [sorted(p for p in (root / c).iterdir() if p.suffix.lower() in IMAGE_EXTS) for c in classes]
    # Round-robin over classes so that a --eval-limit keeps every class represented.
    images, labels = [], []
    for i in range(max(len(files) for files in per_class)):
        for label, files in enumerate(per_class):
            if i < len(files):
                images.append(files[i])
                labels.append(label)
    if not images:
        raise EvalDataError(f"{root}: no images ({', '.join(IMAGE_EXTS)}) in the class subfolders")
    images, labels = images[:limit], labels[:limit]
    return EvalSet("zero-shot", str(root), images, np.asarray(labels), prompts)


def _from_shards(shards: list[Path], limit: Optional[int]) -> EvalSet:
    images, captions = [], []
    stats = ReadStats()
    for sample in iter_samples(shards, stats, reinforced=False):  # skips and counts unreadable samples
        if sample.caption:
            images.append(sample.image_bytes)
            captions.append(sample.caption)
        if limit and len(images) >= limit:
            break
    if len(images) < 2:
        skipped = f" (skipped: {dict(stats.reasons)})" if stats.skipped else ""
        raise EvalDataError(f"{shards[0].parent}: fewer than two samples with an image and a txt caption{skipped}")
    return EvalSet("retrieval", ",".join(map(str, shards)), images, np.arange(len(images)), [[c] for c in captions])


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length in float64 (zero rows stay zero), for accuracy and cosine metrics."""
    return l2_normalize(x, np.float64)


def class_embeddings(text_emb: np.ndarray, prompts: list[list[str]]) -> np.ndarray:
    """Mean of each label's normalized prompt embeddings, renormalized; rows follow `prompts`."""
    text_emb = normalize(text_emb)
    out, start = [], 0
    for group in prompts:
        out.append(text_emb[start : start + len(group)].mean(axis=0))
        start += len(group)
    return normalize(np.stack(out))


def top1(image_emb: np.ndarray, class_emb: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of images whose most similar label is theirs."""
    pred = np.argmax(normalize(image_emb) @ class_emb.T, axis=1)
    return float(np.mean(pred == labels))


def cosine_stats(a: np.ndarray, b: np.ndarray) -> dict:
    """Mean cosine of matching rows, and the mean after centering each side (what shows input handling)."""
    cos = np.sum(normalize(a) * normalize(b), axis=1)
    out = {"cos_mean": float(cos.mean()), "cos_min": float(cos.min())}
    if len(a) > 2:
        ca, cb = normalize(a) - normalize(a).mean(0), normalize(b) - normalize(b).mean(0)
        out["centered_cos_mean"] = float(np.sum(normalize(ca) * normalize(cb), axis=1).mean())
    return out
