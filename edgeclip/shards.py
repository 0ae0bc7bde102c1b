"""The one reader of webdataset / DataCompDR reinforced shards (and plain image folders), torch-free.

A webdataset shard is a tar whose members ``<key>.<ext>`` belong to sample ``<key>``: the image
(jpg/png/webp/bmp), ``txt``, ``syn.json``, ``paug.json``, ``url.txt`` and teacher embeddings in ``npz``
(or ``pth.gz``, which needs torch: the build side passes its loader as ``pth_loader``).

Two modes:
- tolerant (default): a malformed sample (undecodable image, bad JSON, truncated or non-finite teacher
  embeddings, ...) or an unreadable shard is skipped and counted in ``ReadStats``; reading never crashes on bad data;
- ``strict=True``: the first malformed or incomplete sample raises ShardError naming the shard, the key and what is
  wrong (for shards this project wrote itself, e.g. the demo's synthetic dataset).
``reinforced=False`` reads plain webdataset shards (an image and a ``txt`` caption, no stored augmentations).
"""

from __future__ import annotations

import glob
import io
import json
import os
import tarfile
import warnings
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from edgeclip.errors import InputError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")  # image files and image members of a shard
_TAR_EXTS = (".tar", ".tar.gz", ".tgz")
_CAPTION_FILES = ("captions.tsv", "captions.txt", "captions.json")


class ShardError(InputError):
    """Shards or samples that cannot be read (strict mode) or written; the message names the shard and key."""


PthLoader = Callable[[bytes], dict]


@dataclass
class DecodedSample:
    """One reinforced sample, decoded: PIL image, captions, stored augmentations, teacher embeddings."""

    key: str
    image: Image.Image
    caption: str | None
    syn_captions: list[str]
    param_aug: list
    image_emb: np.ndarray | None
    text_emb: np.ndarray | None
    url: str | None = None
    source: str = ""
    image_bytes: bytes = b""  # the encoded image as stored

    @property
    def captions(self) -> list[str]:
        """Original caption first, then the synthetic ones (the text calibration set of this sample)."""
        return ([self.caption] if self.caption else []) + list(self.syn_captions)


@dataclass
class ReadStats:
    """What the reader saw: samples yielded, samples skipped and why (reason -> count)."""

    read: int = 0
    skipped: int = 0
    reasons: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    def skip(self, reason: str) -> None:
        self.skipped += 1
        self.reasons[reason] += 1

    def note(self, message: str) -> None:
        if message not in self.notes:
            self.notes.append(message)
            warnings.warn(message, stacklevel=3)

    def as_dict(self) -> dict:
        return {"read": self.read, "skipped": self.skipped, "reasons": dict(self.reasons), "notes": list(self.notes)}


class _Malformed(Exception):
    """Internal: a sample that cannot be decoded (the message is the skip reason)."""


def resolve_sources(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Expand tar files, directories (of tars, or of plain images) and globs into a sorted source list."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[Path] = []
    for raw in paths:
        text = str(raw)
        if any(ch in text for ch in "*?["):
            matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(text)))
            if not matches:
                raise ShardError(f"calibration glob {text!r} matches no file")
            out.extend(matches)
            continue
        path = Path(os.path.expanduser(text))
        if not path.exists():
            raise ShardError(f"calibration source {path} does not exist")
        if path.is_dir():
            tars = sorted(p for p in path.iterdir() if p.name.endswith(_TAR_EXTS))
            out.extend(tars if tars else [path])
        else:
            out.append(path)
    return out


def iter_samples(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    stats: ReadStats | None = None,
    limit: int | None = None,
    captions_file: str | os.PathLike | None = None,
    strict: bool = False,
    reinforced: bool = True,
    pth_loader: Optional[PthLoader] = None,
) -> Iterator[DecodedSample]:
    """Yield decoded samples from shards / image folders in order.

    Tolerant: malformed ones are skipped into ``stats``. ``strict``: ShardError on the first malformed or incomplete
    sample. ``reinforced=False``: ``paug.json`` is optional. ``pth_loader`` reads ``pth.gz`` teacher embeddings.
    """
    stats = stats if stats is not None else ReadStats()
    mode = _Mode(strict, reinforced, pth_loader)
    produced = 0
    for source in resolve_sources(paths):
        if source.is_dir():
            gen: Iterable[DecodedSample] = _iter_folder(source, stats, captions_file, mode)
        elif source.name.endswith(_TAR_EXTS):
            gen = _iter_tar(source, stats, mode)
        elif source.suffix.lower() in IMAGE_EXTS:
            gen = _iter_image_files([source], stats, {}, mode)
        else:
            raise ShardError(f"{source}: not a webdataset tar, an image, or a folder of images")
        for sample in gen:
            if limit is not None and produced >= limit:
                return
            stats.read += 1
            produced += 1
            yield sample


@dataclass(frozen=True)
class _Mode:
    strict: bool
    reinforced: bool
    pth_loader: Optional[PthLoader]


def _iter_tar(path: Path, stats: ReadStats, mode: _Mode) -> Iterator[DecodedSample]:
    """Group consecutive tar members by key (webdataset convention) and decode each group."""
    try:
        tar = tarfile.open(path, mode="r|*")
    except (tarfile.TarError, OSError) as exc:
        if mode.strict:
            raise ShardError(f"cannot open shard {path}: {exc}") from None
        stats.skip(f"unreadable shard: {exc.__class__.__name__}")
        stats.note(f"{path}: cannot open as a tar file ({exc}); shard skipped")
        return
    key, group = None, {}
    try:
        with tar:
            for member in tar:
                if not member.isfile():
                    continue
                name = member.name.rsplit("/", 1)[-1]
                stem, dot, ext = name.partition(".")
                if not dot:
                    continue
                if key is not None and stem != key:
                    yield from _decode_or_skip(key, group, path, stats, mode)
                    group = {}
                key = stem
                fh = tar.extractfile(member)
                group[ext.lower()] = fh.read() if fh is not None else b""
    except (tarfile.TarError, OSError, EOFError) as exc:
        if mode.strict:
            raise ShardError(f"{path}: tar ends early or is corrupt ({exc})") from None
        stats.skip(f"truncated shard: {exc.__class__.__name__}")
        stats.note(f"{path}: tar ends early or is corrupt ({exc}); samples after that point are lost")
        group = {}
    if key is not None and group:
        yield from _decode_or_skip(key, group, path, stats, mode)


_COMPLETE = ("txt", "syn.json", "paug.json")  # with an image and teacher embeddings: what strict mode requires


def _decode_or_skip(key: str, group: dict, path: Path, stats: ReadStats, mode: _Mode) -> Iterator[DecodedSample]:
    try:
        missing = [m for m in _COMPLETE if m not in group] if mode.strict else []
        if missing:
            raise _Malformed(f"missing {missing[0]!r}")
        sample = _decode(key, group, path, stats, mode)
        if mode.strict and sample.image_emb is None:
            raise _Malformed("missing 'npz'")
        yield sample
    except _Malformed as exc:
        if mode.strict:
            raise ShardError(f"{path}: sample {key!r}: {exc}") from None
        stats.skip(str(exc))


def _decode(key: str, group: dict[str, bytes], path: Path, stats: ReadStats, mode: _Mode) -> DecodedSample:
    """Turn one key's members into a DecodedSample, or raise _Malformed naming what is wrong."""
    image_ext = next((e.lstrip(".") for e in IMAGE_EXTS if e.lstrip(".") in group), None)
    if image_ext is None:
        raise _Malformed("missing image")
    image = _open_image(group[image_ext])
    paug = _load_json(group, "paug.json")
    if paug is None and not mode.reinforced:
        paug = {"param_aug": []}
    if paug is None:
        raise _Malformed("missing paug.json")
    param_aug = paug.get("param_aug") if isinstance(paug, dict) else None
    if isinstance(param_aug, str):  # the Hugging Face copy stores the list as a JSON string
        try:
            param_aug = json.loads(param_aug)
        except json.JSONDecodeError as exc:
            raise _Malformed("bad JSON in paug.json param_aug string") from exc
    if not isinstance(param_aug, list):
        raise _Malformed("paug.json has no param_aug list")
    syn = _load_json(group, "syn.json")
    syn_captions = syn.get("syn_text", []) if isinstance(syn, dict) else []
    if not isinstance(syn_captions, list) or not all(isinstance(c, str) for c in syn_captions):
        raise _Malformed("syn.json syn_text is not a list of strings")
    caption = _text(group, "txt")
    image_emb, text_emb = _teacher_embeddings(group, stats, mode.pth_loader)
    if image_emb is not None and image_emb.shape[0] != len(param_aug):
        raise _Malformed("image_emb rows do not match param_aug entries")
    return DecodedSample(
        key=key, image=image, caption=caption, syn_captions=syn_captions, param_aug=param_aug,
        image_emb=image_emb, text_emb=text_emb, url=_text(group, "url.txt"), source=str(path),
        image_bytes=group[image_ext],
    )


def _open_image(data: bytes) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise _Malformed("undecodable image") from exc
    return img.convert("RGB")


def _load_json(group: dict[str, bytes], ext: str):
    if ext not in group:
        return None
    try:
        return json.loads(group[ext].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _Malformed(f"bad JSON in {ext}") from exc


def _text(group: dict[str, bytes], ext: str) -> str | None:
    if ext not in group:
        return None
    try:
        return group[ext].decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise _Malformed(f"{ext} is not UTF-8") from exc


def _teacher_embeddings(group: dict[str, bytes], stats: ReadStats, pth_loader: Optional[PthLoader]
                        ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Teacher embeddings from ``npz`` (numpy) or ``pth.gz`` (with `pth_loader`); (None, None) when absent."""
    if "npz" in group:
        try:
            with np.load(io.BytesIO(group["npz"]), allow_pickle=False) as z:
                arrays = {k: np.asarray(z[k], dtype=np.float32) for k in z.files}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:  # truncated or corrupt zip
            raise _Malformed("unreadable npz") from exc
    elif "pth.gz" in group:
        if pth_loader is None:
            stats.note("teacher embeddings stored as pth.gz need torch (pip install torch); "
                       "calibration proceeds without teacher agreement for those samples")
            return None, None
        try:
            arrays = pth_loader(group["pth.gz"])
        except ValueError as exc:
            raise _Malformed(str(exc)) from None
    else:
        return None, None
    image_emb, text_emb = arrays.get("image_emb"), arrays.get("text_emb")
    if image_emb is None or image_emb.ndim != 2:
        raise _Malformed("teacher embeddings lack a 2-D image_emb")
    if text_emb is None:  # newer shards keep synthetic-caption embeddings under '<syn key>_emb'
        text_emb = next((v for k, v in arrays.items() if k.endswith("_emb") and k != "image_emb"), None)
    if text_emb is not None and (text_emb.ndim != 2 or text_emb.shape[1] != image_emb.shape[1]):
        raise _Malformed("text_emb shape does not match image_emb")
    if not np.isfinite(image_emb).all() or (text_emb is not None and not np.isfinite(text_emb).all()):
        raise _Malformed("non-finite teacher embeddings (NaN or inf)")
    return image_emb, text_emb


def _iter_folder(folder: Path, stats: ReadStats, captions_file, mode: _Mode) -> Iterator[DecodedSample]:
    """Plain folder: every image file (sorted), captions from ``captions_file`` or captions.{tsv,txt,json}."""
    captions = _read_captions(folder, captions_file)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise ShardError(f"{folder}: no shards (*.tar) and no images ({', '.join(IMAGE_EXTS)})")
    yield from _iter_image_files(files, stats, captions, mode)


def _iter_image_files(files: list[Path], stats: ReadStats, captions: dict[str, str], mode: _Mode
                      ) -> Iterator[DecodedSample]:
    for path in files:
        data = path.read_bytes()
        try:
            image = _open_image(data)
        except _Malformed as exc:
            if mode.strict:
                raise ShardError(f"{path}: {exc}") from None
            stats.skip(str(exc))
            continue
        yield DecodedSample(key=path.stem, image=image, caption=captions.get(path.name, captions.get(path.stem)),
                            syn_captions=[], param_aug=[], image_emb=None, text_emb=None, source=str(path),
                            image_bytes=data)


def _read_captions(folder: Path, captions_file) -> dict[str, str]:
    """Captions as {file name or stem: caption}: TSV/TXT lines ``name<TAB>caption`` or a JSON object."""
    path = Path(captions_file) if captions_file else next(
        (folder / n for n in _CAPTION_FILES if (folder / n).is_file()), None)
    if path is None:
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ShardError(f"captions file {path}: cannot read ({exc})") from exc
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ShardError(f"captions file {path}: bad JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise ShardError(f"captions file {path}: expected a JSON object {{image name: caption}}")
        return {str(k): str(v) for k, v in data.items()}
    out = {}
    for line in text.splitlines():
        name, tab, caption = line.partition("\t")
        if tab and caption.strip():
            out[name.strip()] = caption.strip()
    return out
