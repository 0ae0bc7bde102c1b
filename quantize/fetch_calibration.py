"""``python -m quantize.fetch_calibration``: build a reinforced calibration set from DataCompDR-12M.

Takes the first DataCompDR-12M samples (stored crops, synthetic captions, teacher embeddings), their
URLs and captions from DataComp-12M, downloads the images, and writes webdataset shards that
``quantize.int8`` reads (image + ``txt`` + ``syn.json`` + ``paug.json`` + ``npz``). ``provenance.json``
(dataset revisions, UIDs, counts) is written last: a folder without it is not a finished set.

Resuming: every image lands in ``.work/images/<uid>.<ext>`` atomically and every skipped URL in
``.work/skipped.jsonl``; a rerun after an interruption fetches only the URLs not tried yet.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import logging
import os
import re
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

from PIL import Image
from tqdm import tqdm

from edgeclip.files import atomic_path
from edgeclip.paths import edgeclip_home
from quantize.augment import AugmentError, parse_entry
from quantize.datacompdr import (DR_REPO, SOURCE_NAME, URL_REPO, Candidate, DataUnavailable, HubDataset,
                                 iter_candidates, shard_file)
from quantize.download import FetchLimits, fetch_all
from quantize.errors import QuantizeError
from quantize.hub_probe import hub_unreachable_reason
from quantize.shards import write_shards

log = logging.getLogger("edgeclip")

DEFAULT_SAMPLES = 564  # quantize.int8's defaults: 500 calibration + 64 held-out evaluation samples
SAMPLES_PER_SHARD = 100
SHARD_PREFIX = "calib"
PROVENANCE = "provenance.json"
# DataComp's download tool stores images with the longest side at most 512 px (img2dataset
# keep_ratio_largest, only if bigger); DataCompDR's crop boxes are in the pixels of those stored images.
DATACOMP_MAX_SIDE = 512
_OWN_SHARD = re.compile(rf"^{SHARD_PREFIX}-\d{{6}}\.tar$")
_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}


def default_dir() -> Path:
    """Where ``quantize.int8`` keeps (and looks for) the DataCompDR-12M calibration set."""
    return edgeclip_home() / "calibration" / SOURCE_NAME


def fetch_command(samples: int, out: Path | None = None) -> str:
    """The command that builds the set on a machine with internet access."""
    return f"python -m quantize.fetch_calibration --samples {samples} --out {out or default_dir()}"


def read_provenance(folder: Path) -> dict | None:
    """The finished set's provenance, or None when ``folder`` holds no finished set."""
    try:
        prov = json.loads((Path(folder) / PROVENANCE).read_text())
    except (OSError, ValueError):
        return None
    return prov if isinstance(prov, dict) and isinstance(prov.get("samples"), int) else None


class _Skip(Exception):
    """Internal: a downloaded body that cannot be a calibration image (the message is the counted reason)."""


def stored_image(data: bytes, cand: Candidate) -> tuple[bytes, str]:
    """(bytes, extension) of the image as DataComp stored it; ``_Skip`` when it is not the image the teachers saw."""
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError):
        raise _Skip("undecodable image") from None
    if cand.original_size and img.size != cand.original_size:
        raise _Skip("image changed since DataComp (other size)")
    fmt = _FORMATS.get(img.format or "")
    scale = DATACOMP_MAX_SIDE / max(img.size)
    if scale < 1:
        img = img.convert("RGB").resize(tuple(round(d * scale) for d in img.size), Image.Resampling.BOX)
        fmt = None
    width, height = img.size
    for entry in cand.param_aug:
        try:
            (i, j, h, w), _ = parse_entry(entry)
        except AugmentError:
            raise _Skip("malformed reinforcement metadata") from None
        if i < 0 or j < 0 or i + h > height or j + w > width:
            raise _Skip("stored crop outside the image")
    if fmt:
        return data, fmt
    out = io.BytesIO()
    img.convert("RGB").save(out, format="JPEG", quality=95)
    return out.getvalue(), "jpg"


@dataclass
class FetchOptions:
    """What to fetch and where; limits apply to each image download."""

    samples: int = DEFAULT_SAMPLES
    out: Path | None = None
    limits: FetchLimits = FetchLimits()
    first_shard: int = 0
    progress: bool = True


class _WorkDir:
    """``.work/``: downloaded images (one atomic file each) and the journal of skipped URLs."""

    def __init__(self, root: Path):
        self.images = root / ".work" / "images"
        self.images.mkdir(parents=True, exist_ok=True)
        self.journal = root / ".work" / "skipped.jsonl"
        self.have = {p.stem: p for p in self.images.iterdir() if not p.name.startswith(".")}
        self.skipped: dict[str, str] = {}
        if self.journal.is_file():
            for line in self.journal.read_text(encoding="utf-8", errors="replace").splitlines():
                try:  # a line cut short by a kill is simply not there
                    rec = json.loads(line)
                    self.skipped[rec["uid"]] = rec["reason"]
                except (ValueError, KeyError, TypeError):
                    continue

    def save(self, uid: str, data: bytes, ext: str) -> None:
        path = self.images / f"{uid}.{ext}"
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
        self.have[uid] = path

    def skip(self, uid: str, reason: str) -> None:
        with open(self.journal, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"uid": uid, "reason": reason}) + "\n")
        self.skipped[uid] = reason


def _fetch_round(todo: list[Candidate], work: _WorkDir, limits: FetchLimits, bar) -> None:
    by_uid = {c.uid: c for c in todo}
    for got in fetch_all(((c.uid, c.url) for c in todo), limits):
        try:
            if got.error:
                raise _Skip(got.error)
            data, ext = stored_image(got.data, by_uid[got.key])
        except _Skip as exc:
            work.skip(got.key, str(exc))
            continue
        work.save(got.key, data, ext)
        bar.update(1)


def _collect(opts: FetchOptions, work: _WorkDir, online: bool, dropped: dict) -> tuple[list[Candidate], list]:
    """Walk the joined metadata in order, fetching in rounds, until ``opts.samples`` images are in hand."""
    dr, urls = HubDataset(DR_REPO, online), HubDataset(URL_REPO, online)
    stream = iter_candidates(dr, urls, dropped, opts.first_shard)
    tried: list[Candidate] = []
    bar = tqdm(total=opts.samples, initial=min(len(work.have), opts.samples), desc="calibration images",
               unit="img", disable=not opts.progress)
    try:
        while True:
            good = sum(1 for c in tried if c.uid in work.have)
            need = opts.samples - good
            if need <= 0:
                break
            batch = list(itertools.islice(stream, need))
            if not batch:
                break
            tried.extend(batch)
            _fetch_round([c for c in batch if c.uid not in work.have and c.uid not in work.skipped], work,
                         opts.limits, bar)
    finally:
        bar.close()
        stream.close()
    return tried, [dr, urls]


def _write_set(out: Path, used: list[Candidate], work: _WorkDir) -> list[Path]:
    """Shards of the used samples (atomic each); shards of an earlier, larger attempt are removed."""
    def samples() -> Iterable:
        for cand in used:
            path = work.have[cand.uid]
            yield cand.sample(path.read_bytes(), path.suffix.lstrip("."))

    paths = write_shards(samples(), out, prefix=SHARD_PREFIX, samples_per_shard=SAMPLES_PER_SHARD)
    for stale in sorted(out.iterdir()):
        if _OWN_SHARD.match(stale.name) and stale not in paths:
            stale.unlink()
    return paths


def _check_out(out: Path) -> None:
    """Refuse a folder holding other tar files: the reader would take them as calibration shards."""
    if not out.exists():
        return
    if not out.is_dir():
        raise QuantizeError(f"--out {out} exists and is not a folder")
    foreign = [p.name for p in out.iterdir() if p.name.endswith(".tar") and not _OWN_SHARD.match(p.name)]
    if foreign:
        raise QuantizeError(f"--out {out} already holds other shards ({', '.join(sorted(foreign)[:3])}); "
                            "choose an empty or new folder")


def fetch_calibration(opts: FetchOptions) -> dict:
    """Build (or reuse) the calibration set in ``opts.out``; returns its provenance."""
    out = Path(opts.out or default_dir()).expanduser()
    if opts.samples < 1:
        raise QuantizeError(f"--samples must be at least 1, got {opts.samples}")
    prov = read_provenance(out)
    if prov and prov["samples"] >= opts.samples:
        return prov
    reason = hub_unreachable_reason()
    if prov and reason:
        log.warning("%s holds %d of the %d samples asked for and the Hub is not reachable (%s); using them",
                    out, prov["samples"], opts.samples, reason)
        return prov
    _check_out(out)
    out.mkdir(parents=True, exist_ok=True)
    work = _WorkDir(out)
    dropped: dict[str, int] = {}
    started = time.time()
    try:
        tried, repos = _collect(opts, work, reason is None, dropped)
    except ImportError as exc:
        raise QuantizeError(f"the DataCompDR-12M fetch reads the Hub with huggingface_hub ({exc}); "
                            "pip install -e '.[hub]'") from None
    except DataUnavailable as exc:
        raise DataUnavailable(f"{exc} ({reason}). Build the set where the Hub is reachable with\n  "
                              f"{fetch_command(opts.samples)}\nand copy that folder to {default_dir()} "
                              f"(or pass it with --calibration).") from None
    used = [c for c in tried if c.uid in work.have][:opts.samples]
    if not used:
        skipped = dict(Counter(work.skipped[c.uid] for c in tried if c.uid in work.skipped))
        raise QuantizeError(f"no usable calibration image among {len(tried)} DataCompDR-12M samples "
                            f"(skipped: {skipped}; metadata dropped before download: {dropped})")
    (out / PROVENANCE).unlink(missing_ok=True)  # the set is unfinished until the new provenance is written
    shards = _write_set(out, used, work)
    prov = _provenance(opts, tried, used, work, repos, dropped, shards, started)
    with atomic_path(out / PROVENANCE) as tmp:
        tmp.write_text(json.dumps(prov, indent=2) + "\n")
    return prov


def _provenance(opts, tried, used, work, repos, dropped, shards, started) -> dict:
    skipped = Counter(work.skipped[c.uid] for c in tried if c.uid in work.skipped)
    return {
        "source": SOURCE_NAME, "created_by": "quantize.fetch_calibration",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "datasets": {h.repo: {"revision": h.commit, "shards": sorted({c.shard for c in tried})} for h in repos},
        "requested": opts.samples, "samples": len(used), "urls_tried": len(tried),
        "skipped": sum(skipped.values()), "skip_reasons": dict(skipped), "metadata_dropped": dropped,
        "shards": [p.name for p in shards], "samples_per_shard": SAMPLES_PER_SHARD,
        "limits": asdict(opts.limits), "seconds": round(time.time() - started, 1),
        "uids": [c.uid for c in used],
    }


def fetch_summary(paths: Iterable[str | os.PathLike]) -> dict | None:
    """The provenance of a fetched set among ``paths`` (without the UID list), for the quantization report."""
    for path in paths:
        prov = read_provenance(Path(path)) if Path(path).is_dir() else None
        if prov:
            return {k: v for k, v in prov.items() if k != "uids"}
    return None


def calibration_cached() -> bool:
    """True when the default set is finished, or its first metadata shards are in the Hugging Face cache."""
    if read_provenance(default_dir()) is not None:
        return True
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    return all(isinstance(try_to_load_from_cache(repo, shard_file(0), repo_type="dataset"), str)
               for repo in (DR_REPO, URL_REPO))


def limits_from_env() -> FetchLimits:
    """Download limits, shortened by ``EDGECLIP_FETCH_TIMEOUT`` (seconds) / ``EDGECLIP_FETCH_MAX_MB`` when set."""
    timeout = float(os.environ.get("EDGECLIP_FETCH_TIMEOUT") or FetchLimits.timeout)
    max_mb = float(os.environ.get("EDGECLIP_FETCH_MAX_MB") or FetchLimits.max_bytes / 2**20)
    return FetchLimits(timeout=timeout, deadline=max(3 * timeout, FetchLimits.deadline), max_bytes=int(max_mb * 2**20))


def ensure_calibration(samples: int, progress: bool = True) -> Path:
    """The default calibration folder holding at least ``samples`` samples, fetched when missing."""
    fetch_calibration(FetchOptions(samples=samples, limits=limits_from_env(), progress=progress))
    return default_dir()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m quantize.fetch_calibration",
        description="Build the INT8 calibration set: the first DataCompDR-12M samples (stored crops, synthetic "
                    "captions, teacher embeddings) with their images downloaded from the DataComp-12M URLs, as "
                    "webdataset shards plus provenance.json. Reruns reuse the set; an interrupted run resumes.")
    p.add_argument("--samples", type=int, default=DEFAULT_SAMPLES,
                   help=f"samples with a working image to collect (default {DEFAULT_SAMPLES} = quantize.int8's "
                        "500 calibration + 64 evaluation)")
    p.add_argument("--out", type=Path, help=f"output folder (default {default_dir()}, where quantize.int8 looks)")
    p.add_argument("--first-shard", type=int, default=0, help="first dataset shard to read (default 0)")
    p.add_argument("--workers", type=int, default=FetchLimits.workers, help="parallel downloads (default 16)")
    p.add_argument("--timeout", type=float, default=FetchLimits.timeout,
                   help="seconds to connect and for each read (default 10)")
    p.add_argument("--max-mb", type=float, default=FetchLimits.max_bytes / 2**20,
                   help="largest image body accepted, in MB (default 20)")
    p.add_argument("--json", action="store_true", help="print the provenance as JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    limits = FetchLimits(timeout=args.timeout, deadline=max(3 * args.timeout, FetchLimits.deadline),
                         max_bytes=int(args.max_mb * 2**20), workers=args.workers)
    opts = FetchOptions(samples=args.samples, out=args.out, limits=limits, first_shard=args.first_shard,
                        progress=not args.quiet)
    try:
        prov = fetch_calibration(opts)
    except QuantizeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out = Path(args.out or default_dir())
    if args.json:
        print(json.dumps({"out": str(out), **{k: v for k, v in prov.items() if k != "uids"}}, indent=2))
    else:
        print(f"{prov['samples']} samples in {len(prov['shards'])} shards at {out} ({prov['urls_tried']} URLs "
              f"tried, {prov['skipped']} skipped: {prov['skip_reasons']})")
    return 0 if prov["samples"] >= args.samples else 2


if __name__ == "__main__":
    sys.exit(main())
