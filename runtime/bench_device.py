"""Benchmark rows for the whole device path: real-photo JPEG -> embedding, streaming throughput, and cold start
and peak RSS per set of loaded towers.

- `photo_rows`: per bundle, in fresh processes, a 1 MP and a 12 MP photo end to end in "fast" and "exact"
  modes, taking turns with the image tower alone at batch 1 (the ratio end-to-end / tower is from one process);
- `stream_rows`: per bundle, in a fresh process, images/s over N 12 MP JPEGs: `Encoder.embed_images` against
  the sequential `encode_image` loop in "exact" mode (the path before streaming existed) and in "fast" mode;
- `tower_probe_rows`: cold start (fresh process to first embedding) and peak RSS with the image tower only
  (`Encoder(towers="image")`), the text tower only, and both: the default Encoder, which opens each tower on
  first use, timed to the first image embedding and to the first image + first text (runtime.bench_probe --towers).

The child side is `python -m runtime.bench_device` with the job as JSON on stdin.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from runtime.bench_timing import TimingPlan, alternate, run_child, summarize, time_rotation

PHOTO_SIZES = (1, 12)
MODES = ("fast", "exact")
TOWER_SETS = ("image", "text", "both")
# runtime.bench_probe's timings; "both" (the default Encoder, towers opened on first use) adds the first text
PROBE_TIMES = ("import_s", "session_s", "first_image_s", "first_text_s", "cold_start_s", "cold_start_image_and_text_s",
               "process_to_first_embedding_s")
# and its peak RSS after each step: import, Encoder(...), first image, the end
PROBE_PEAKS = ("rss_after_import_mb", "peak_rss_encoder_mb", "peak_rss_first_image_mb", "peak_rss_mb")


def photo_set(folder: Path, megapixels: int, count: int) -> list[Path]:
    """`count` real-photo JPEGs of `megapixels` MP in folder (written once; see runtime.bench_photos)."""
    from runtime.bench_photos import write_photo_jpegs

    return write_photo_jpegs(folder / f"{megapixels}mp", megapixels, count)


def _photo_job(job: dict) -> dict:
    from edgeclip.encoder import Encoder

    enc = Encoder(job["bundle"], providers=[job["provider"]], threads=job.get("threads"), towers="image")
    x = enc.preprocess(job["images"][str(PHOTO_SIZES[0])])[None]
    calls: dict[str, Callable[[], object]] = {"tower": lambda: enc.embed_preprocessed(x)}
    for mp, path in job["images"].items():
        for mode in MODES:
            def call(path=path, mode=mode):
                enc.preprocess_mode = mode
                return enc.encode_image(path)
            calls[f"{mp}mp_{mode}"] = call
    plan = TimingPlan(**job["plan"])
    return {"status": "ok", **time_rotation(calls, replace(plan, warmup=max(plan.warmup, 2)))}


def _stream_job(job: dict) -> dict:
    from edgeclip.encoder import Encoder

    paths = job["paths"]
    enc = Encoder(job["bundle"], providers=[job["provider"]], threads=job.get("threads"), towers="image")
    for p in paths:  # the files come from the page cache in every variant, not from disk in the first only
        Path(p).read_bytes()
    out = {}

    def timed(name: str, fn: Callable[[], int]) -> None:
        t = time.perf_counter()
        n = fn()
        out[name] = {"seconds": time.perf_counter() - t, "images": n}

    def sequential(mode: str) -> int:
        enc.preprocess_mode = mode
        return sum(len(enc.encode_image(p)) for p in paths[: job["sequential_images"]])

    def streamed(mode: str) -> int:
        enc.preprocess_mode = mode
        return sum(len(b) for b in enc.embed_images(paths, batch_size=job["batch_size"]))

    enc.encode_image(paths[0])  # warm-up: first-run allocations are not throughput
    timed("sequential_exact", lambda: sequential("exact"))
    timed("sequential_fast", lambda: sequential("fast"))
    timed("stream_fast", lambda: streamed("fast"))
    out["workers"] = enc.workers
    return {"status": "ok", **out}


def photo_rows(runners: list, plan: TimingPlan, threads: Optional[int], photos: Path) -> list[dict]:
    """End-to-end rows at 1 and 12 MP in both modes, with the tower's own latency from the same processes."""
    images = {str(mp): str(photo_set(photos, mp, 1)[0]) for mp in PHOTO_SIZES}
    targets = [r for r in runners if r.bundle and "image" in r.factories]
    jobs = {r.key: {"kind": "photo", "plan": asdict(plan), "bundle": r.bundle, "provider": r.provider,
                    "threads": threads, "images": images} for r in targets}
    results = alternate(jobs, lambda job: run_child("runtime.bench_device", [], job), plan.processes)
    rows = []
    for r in targets:
        res = [x for x in results[r.key] if x.get("status") == "ok"]
        if not res:
            reason = next((x.get("crashed") or x.get("reason") for x in results[r.key]), "no result")
            rows.append({"kind": "end_to_end_photo", **r.describe(), "status": "error", "reason": reason})
            continue
        tower = summarize([s for x in res for s in x["tower"]])
        for mp in PHOTO_SIZES:
            for mode in MODES:
                stats = summarize([s for x in res for s in x[f"{mp}mp_{mode}"]])
                rows.append({"kind": "end_to_end_photo", **r.describe(), "status": "ok", "megapixels": mp,
                             "mode": mode, "image": Path(images[str(mp)]).name, **stats,
                             "tower_median_ms": tower["median_ms"],
                             "ratio_to_tower": stats["median_ms"] / tower["median_ms"]})
    return rows


def stream_rows(runners: list, threads: Optional[int], photos: Path, n_images: int = 200, batch_size: int = 8,
                sequential_images: Optional[int] = None) -> list[dict]:
    """Images/s over `n_images` 12 MP JPEGs: streaming (fast) vs the sequential encode_image loop (exact, fast)."""
    paths = [str(p) for p in photo_set(photos, 12, n_images)]
    rows = []
    for r in [r for r in runners if r.bundle and "image" in r.factories]:
        job = {"kind": "stream", "bundle": r.bundle, "provider": r.provider, "threads": threads, "paths": paths,
               "batch_size": batch_size, "sequential_images": sequential_images or n_images}
        try:
            res = run_child("runtime.bench_device", [], job, timeout=3600)
        except RuntimeError as exc:
            rows.append({"kind": "stream", **r.describe(), "status": "error", "reason": str(exc)})
            continue
        ips = {k: v["images"] / v["seconds"] for k, v in res.items() if isinstance(v, dict)}
        rows.append({"kind": "stream", **r.describe(), "status": "ok", "megapixels": 12, "n_images": n_images,
                     "batch_size": batch_size, "workers": res["workers"],
                     "sequential_images": sequential_images or n_images,
                     **{f"{k}_images_per_s": v for k, v in ips.items()},
                     "speedup_vs_sequential_exact": ips["stream_fast"] / ips["sequential_exact"],
                     "speedup_vs_sequential_fast": ips["stream_fast"] / ips["sequential_fast"]})
    return rows


def warm_start_caches(bundle: str, provider: str, threads: Optional[int], jpeg: Path) -> None:
    """One untimed fresh process embedding an image and a text, so the start-up caches (optimized graphs, tokenizer,
    file digests; docs/runtime.md) hold this bundle before cold starts are timed: a machine fills them once."""
    run_child("runtime.bench_probe", ["--bundle", bundle, "--provider", provider, "--image", str(jpeg)]
              + (["--threads", str(threads)] if threads else []), timeout=600)


def tower_probe_rows(runners: list, threads: Optional[int], jpeg: Path, repeats: int = 3) -> list[dict]:
    """Cold start and peak RSS with image only, text only and both towers, each a fresh process `repeats` times
    (after warm_start_caches)."""
    rows = []
    for r in [r for r in runners if r.bundle]:
        try:
            warm_start_caches(r.bundle, r.provider, threads, jpeg)
        except RuntimeError:
            pass  # the timed runs below meet the same failure and report it as an error row
        for towers in TOWER_SETS:
            if towers != "both" and towers not in r.factories:
                continue
            args = ["--bundle", r.bundle, "--provider", r.provider, "--image", str(jpeg), "--towers", towers]
            args += ["--threads", str(threads)] if threads else []
            try:
                runs = [run_child("runtime.bench_probe", args, timeout=600) for _ in range(max(1, repeats))]
            except RuntimeError as exc:
                rows.append({"kind": "cold_start_towers", **r.describe(), "towers": towers, "status": "error",
                             "reason": str(exc)})
                continue
            med = {k: float(np.median([x[k] for x in runs])) for k in PROBE_TIMES if k in runs[0]}
            peaks = {k: max(x[k] for x in runs) for k in PROBE_PEAKS if k in runs[0]}
            rows.append({"kind": "cold_start_towers", **r.describe(), "towers": towers, "status": "ok",
                         "n": len(runs), **med, **peaks,
                         "peak_rss_mb_median": float(np.median([x["peak_rss_mb"] for x in runs]))})
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Child entry point: read a job (kind "photo" or "stream") from stdin, print its result as one JSON line."""
    job = json.loads(sys.stdin.read())
    result = _photo_job(job) if job["kind"] == "photo" else _stream_job(job)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
