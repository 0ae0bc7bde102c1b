"""On-device benchmark: latency, end-to-end, cold start, memory and accuracy of edgeclip bundles per provider.

`python -m runtime.bench --bundle DIR... --report OUT/` writes OUT/report.json, report.md and report.png.
Torch-free and pytest-free (runs on a Raspberry Pi or in Termux). The build side adds torch and
`quantize_dynamic` rows by calling `run_bench` with extra runners, so all rows share one run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from edgeclip.bundle import load_bundle
from edgeclip.errors import EdgeclipError
from runtime.bench_accuracy import (
    EvalDataError,
    EvalSet,
    class_embeddings,
    cosine_stats,
    load_eval_set,
    top1,
)
from runtime.bench_device import photo_rows, stream_rows, tower_probe_rows, warm_start_caches
from runtime.bench_runners import (
    TOWERS,
    Runner,
    bundle_runners,
    failure_status,
    image_batch,
    label_for,
    provider_plan,
    token_batch,
)
from runtime.bench_timing import FULL, QUICK, TimingPlan, alternate, run_child, summarize
from runtime.providers import thread_count

SCHEMA = "edgeclip-bench/1"
REFERENCE_PROVIDER = "CPUExecutionProvider"


@dataclass
class BenchConfig:
    """What to measure and how long."""

    towers: Sequence[str] = TOWERS
    batches: Sequence[int] = (1, 8)
    plan: TimingPlan = FULL
    threads: Optional[int] = None
    eval_dir: Optional[Path] = None
    eval_dirs: dict[str, Path] = field(default_factory=dict)  # per model id; overrides eval_dir
    eval_limit: Optional[int] = 500
    image: Optional[Path] = None  # JPEG for end-to-end and cold start; generated when None
    end_to_end: bool = True
    cold_start: bool = True
    cold_repeats: int = 3
    stream_images: int = 0  # 12 MP JPEGs for the streaming row (the command line's default is 200); 0: no row
    photos: Optional[Path] = None  # where the real-photo JPEGs are written and reused; default a temp folder
    device_variants: Optional[Sequence[str]] = None  # runner variants that get the device-path rows; None: all
    accuracy: bool = True
    command: str = ""
    notes: list[str] = field(default_factory=list)


def log(msg: str) -> None:
    """Progress and skip messages go to stderr so that `--json` stdout stays machine-readable."""
    print(msg, file=sys.stderr, flush=True)


def _bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, file=sys.stderr, leave=False)


def machine_info() -> dict:
    """Where the numbers come from."""
    import onnxruntime as ort

    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "available_providers": ort.get_available_providers(),
    }


def _timing_job(kind: str, plan: TimingPlan, **fields) -> dict:
    return {"kind": kind, "plan": asdict(plan), **fields}


def _in_fresh_processes(jobs: dict, plan: TimingPlan, desc: str, progress: bool) -> dict:
    """Every runtime.bench_worker job `plan.processes` times, alternating (runtime.bench_timing.alternate)."""
    with _bar(len(jobs) * plan.processes, desc, progress) as bar:
        return alternate(jobs, lambda job: run_child(_worker(job), [], job), plan.processes,
                         on_done=lambda key: bar.update(1))


def _worker(job: dict) -> str:
    """The module a job runs in: the runner recipe's own worker (the build side's torch runners), else ours."""
    return (job.get("recipe") or {}).get("worker", "runtime.bench_worker")


def _merge(results: list[dict], pick: Callable[[dict], Optional[list[float]]]) -> tuple[list[float], Optional[str]]:
    """All rounds' samples of one measurement, or the first reason a round produced none."""
    samples, reason = [], None
    for res in results:
        got = pick(res) if "crashed" not in res else None
        if got is None:
            reason = reason or res.get("crashed") or res.get("reason") or "no samples"
        else:
            samples += got
    return samples, reason


def latency_rows(runners: list[Runner], config: BenchConfig, progress: bool = True) -> list[dict]:
    """Tower latency for every runner, tower and batch: each runner alone in a fresh process per round, the
    processes of all runners alternating `plan.processes` times (see runtime.bench_timing for why)."""
    towers = {r.key: [t for t in config.towers if t in r.factories] for r in runners}
    timed = [r for r in runners if towers[r.key]]
    for r in timed:
        if r.recipe is None:
            raise ValueError(f"runner {r.label} [{r.model_id}] has no recipe, so it cannot be timed in its own process")
    jobs = {r.key: _timing_job("latency", config.plan, recipe=r.recipe,
                               towers={t: list(config.batches) for t in towers[r.key]}) for r in timed}
    results = _in_fresh_processes(jobs, config.plan, "latency", progress)
    rows = []
    for r in timed:
        for tower in towers[r.key]:
            per_round = [res.get("towers", {}).get(tower, res) for res in results[r.key]]  # a crash covers all
            refused = next((f for f in per_round if f.get("status") == "skipped"), None)
            if refused:
                log(f"skipped: {r.label} [{r.model_id}] {tower} on {r.provider}: {refused['reason']}")
                rows.append({"kind": "latency", **r.describe(), "tower": tower, "status": "skipped",
                             "reason": refused["reason"]})
                continue
            for batch in config.batches:
                samples, reason = _merge(per_round, lambda res: (res.get("samples") or {}).get(str(batch)))
                base = {"kind": "latency", **r.describe(), "tower": tower, "batch": batch}
                if reason or not samples:
                    log(f"error: {r.label} [{r.model_id}] {tower} b{batch} on {r.provider}: {reason}")
                    rows.append({**base, "status": "error", "reason": reason})
                    continue
                stats = summarize(samples)
                rows.append({**base, "status": "ok", **stats, "per_item_ms": stats["median_ms"] / batch,
                             "processes": len(per_round)})
    return rows


COVERAGE_PROVIDERS = ("XNNPACKExecutionProvider", "NnapiExecutionProvider")


def coverage_rows(runners: list[Runner], towers: Sequence[str]) -> list[dict]:
    """Static XNNPACK/NNAPI coverage of each bundle tower (partitions, share of multiply-accumulates, hand-overs),
    from runtime.readiness, so the report shows beside the latency what a provider would run, even where absent."""
    rows, seen = [], set()
    for r in runners:
        for tower in towers:
            if not r.bundle or tower not in r.factories or (r.bundle, tower) in seen:
                continue
            seen.add((r.bundle, tower))
            base = {"kind": "coverage", "model": r.model_id, "variant": r.variant, "label": r.label,
                    "bundle": r.bundle, "tower": tower}
            try:
                from runtime.readiness import tower_summary  # needs onnx, an analysis-only package

                summary = tower_summary(load_bundle(r.bundle, verify=False).tower_path(tower))
                found = {"XNNPACKExecutionProvider": summary["xnnpack"], "NnapiExecutionProvider": summary["nnapi"]}
            except (ImportError, EdgeclipError) as exc:
                rows.append({**base, "provider": "static analysis", "status": "skipped", "reason": str(exc)})
                continue
            for provider in COVERAGE_PROVIDERS:
                c = found[provider]
                rows.append({**base, "provider": provider, "status": "ok", "partitions": c["partitions"],
                             "mac_share": c["mac_share"], "handovers": c["handovers"],
                             "layout_changes": c.get("layout_changes")})
    return rows


def make_test_jpeg(folder: Path, size: tuple[int, int] = (1280, 960)) -> Path:
    """A deterministic photo-sized JPEG (smooth gradients plus texture), so decode cost is realistic."""
    from PIL import Image

    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(0)
    rgb = np.stack([xx / w, yy / h, 0.5 + 0.5 * np.sin((xx + yy) / 37.0)], axis=-1) * 200
    rgb += rng.normal(0, 12, size=rgb.shape)
    path = folder / "bench_photo.jpg"
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(path, quality=90)
    return path


def end_to_end_rows(runners: list[Runner], config: BenchConfig, jpeg: Path, progress: bool = True) -> list[dict]:
    """JPEG file -> normalized embedding with `edgeclip.Encoder`, and the share spent on decode + preprocessing;
    each bundle runner in its own fresh processes, alternating like `latency_rows`."""
    targets = [r for r in runners if r.bundle and "image" in r.factories]
    jobs = {r.key: _timing_job("end_to_end", config.plan, bundle=r.bundle, provider=r.provider,
                               threads=config.threads, image=str(jpeg)) for r in targets}
    results = _in_fresh_processes(jobs, config.plan, "end-to-end", progress)
    rows = []
    for r in targets:
        res = results[r.key]
        refused = next((x for x in res if x.get("status") == "skipped"), None)
        samples, reason = _merge(res, lambda x: x.get("encode"))
        if refused or reason:
            status, why = ("skipped", refused["reason"]) if refused else ("error", reason)
            log(f"{status}: end-to-end {r.label} [{r.model_id}] on {r.provider}: {why}")
            rows.append({"kind": "end_to_end", **r.describe(), "status": status, "reason": why})
            continue
        stats = summarize(samples)
        decode = summarize(_merge(res, lambda x: x.get("decode"))[0])
        pre = summarize(_merge(res, lambda x: x.get("preprocess"))[0])
        rows.append({"kind": "end_to_end", **r.describe(), "tower": "image", "batch": 1, "image": str(jpeg),
                     "status": "ok", **stats, "decode_ms": decode["median_ms"],
                     "decode_preprocess_ms": pre["median_ms"],
                     # Share from the fastest calls: noise only adds time, so minima compare like with like.
                     "preprocess_share": pre["min_ms"] / stats["min_ms"]})
    return rows


def _probe(bundle: str, provider: str, jpeg: Path, threads: Optional[int]) -> dict:
    """Run runtime.bench_probe in a fresh interpreter; returns its JSON plus the parent's wall time."""
    args = ["--bundle", bundle, "--provider", provider, "--image", str(jpeg)]
    if threads:
        args += ["--threads", str(threads)]
    t = time.perf_counter()
    out = run_child("runtime.bench_probe", args, timeout=600)
    out["process_wall_s"] = time.perf_counter() - t
    return out


def process_rows(runners: list[Runner], config: BenchConfig, jpeg: Path, progress: bool = True) -> list[dict]:
    """Cold start (import + session + first embedding) and peak RSS with both towers, each in a fresh process,
    with the start-up caches warm (bench_device.warm_start_caches)."""
    rows = []
    targets = [r for r in runners if r.bundle]
    with _bar(len(targets), "cold start", progress) as bar:
        for r in targets:
            runs = []
            try:
                warm_start_caches(r.bundle, r.provider, config.threads, jpeg)
                for _ in range(max(1, config.cold_repeats)):
                    runs.append(_probe(r.bundle, r.provider, jpeg, config.threads))
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"[:500]
                log(f"error: cold start {r.label} [{r.model_id}] on {r.provider}: {reason}")
                rows.append({"kind": "cold_start", **r.describe(), "status": "error", "reason": reason})
                bar.update(1)
                continue
            med = {k: float(np.median([run[k] for run in runs])) for k in runs[0] if isinstance(runs[0][k], float)}
            rows.append({"kind": "cold_start", **r.describe(), "status": "ok", "n": len(runs),
                         **{k: v for k, v in med.items() if k.endswith("_s")}})
            rows.append({"kind": "memory", **r.describe(), "status": "ok", "towers": sorted(r.factories),
                         "peak_rss_mb": max(run["peak_rss_mb"] for run in runs),
                         "rss_after_import_mb": med["rss_after_import_mb"]})
            bar.update(1)
    return rows


def _embed(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, chunk: int = 16) -> np.ndarray:
    return np.concatenate([fn(x[i : i + chunk]) for i in range(0, len(x), chunk)])


def _model_inputs(r: Runner, eval_set: Optional[EvalSet]) -> tuple[np.ndarray, np.ndarray, str]:
    """(image tensor, token ids, description) for one model: the eval set, else generated probe inputs."""
    if eval_set is None:
        return image_batch(r.image_size, 16, seed=1), token_batch(r.context_length, 16, seed=1), "generated inputs"
    from edgeclip.bundle import load_bundle
    from edgeclip.preprocess import preprocess_image
    from edgeclip.tokenizer import load_tokenizer

    bundle = load_bundle(r.bundle, verify=False)
    images = np.stack([preprocess_image(src, bundle.preprocess) for src in eval_set.images])
    tok = load_tokenizer(bundle.tokenizer_path, context_length=r.context_length)
    ids = tok([p for group in eval_set.prompts for p in group])
    return images, ids, eval_set.source


def accuracy_rows(runners: list[Runner], config: BenchConfig, progress: bool = True) -> list[dict]:
    """Per runner: top-1 on the eval set (when given) and embedding cosine vs the same model's fp32 bundle on CPU."""
    sets: dict[Path, EvalSet] = {}
    rows = []
    by_model: dict[str, list[Runner]] = {}
    for r in runners:
        by_model.setdefault(r.model_id, []).append(r)
    with _bar(len(runners), "accuracy", progress) as bar:
        for model, group in by_model.items():
            source = next((r for r in group if r.bundle), None)
            fp32 = [r for r in group if r.engine == "onnxruntime" and r.variant == "fp32"]
            ref = next((r for r in fp32 if r.provider == REFERENCE_PROVIDER), fp32[0] if fp32 else None)
            if source is None:
                log(f"skipped: accuracy of {model}: no bundle of this model to take preprocessing and tokenizer from")
                bar.update(len(group))
                continue
            path = config.eval_dirs.get(model, config.eval_dir)
            if path is not None and path not in sets:
                sets[path] = load_eval_set(path, config.eval_limit)
            eval_set = sets.get(path) if path is not None else None
            images, ids, desc = _model_inputs(source, eval_set)
            order = ([ref] if ref else []) + [r for r in group if r is not ref]
            ref_emb: dict[str, np.ndarray] = {}
            model_rows = []
            for r in order:
                row = {"kind": "accuracy", **r.describe(), "eval": desc, "n_images": len(images)}
                try:
                    emb = {t: _embed(r.tower(t), x) for t, x in (("image", images), ("text", ids)) if t in r.factories}
                except Exception as exc:
                    status, reason = failure_status(exc)
                    log(f"{status}: accuracy {r.label} [{model}] on {r.provider}: {reason}")
                    row.update(status=status, reason=reason)
                    model_rows.append(row)
                    bar.update(1)
                    continue
                finally:
                    for t in TOWERS:
                        r.release(t)
                row["status"] = "ok"
                if r is ref:
                    ref_emb = emb
                for t, e in emb.items():
                    if t in ref_emb and r is not ref:
                        row.update({f"{t}_{k}": v for k, v in cosine_stats(ref_emb[t], e).items()})
                if ref is not None:
                    row["cos_reference"] = ref.label + f" on {ref.provider}"
                if eval_set is not None and len(emb) == 2:
                    row["task"] = eval_set.kind
                    row["n_labels"] = len(eval_set.prompts)
                    row["top1"] = top1(emb["image"], class_embeddings(emb["text"], eval_set.prompts), eval_set.labels)
                model_rows.append(row)
                bar.update(1)
            _add_drops(model_rows)
            rows.extend(model_rows)
    return rows


def _add_drops(rows: list[dict]) -> None:
    """Top-1 drop in points against torch fp32 when present, else ORT fp32 on the CPU provider."""
    scored = [r for r in rows if r.get("top1") is not None]
    ref = next((r for r in scored if r["engine"] == "torch" and r["variant"] == "fp32"), None) or next(
        (r for r in scored if r["variant"] == "fp32" and r["provider"] == REFERENCE_PROVIDER), None
    )
    if ref is None:
        return
    for r in scored:
        r["top1_drop_pts"] = 100.0 * (ref["top1"] - r["top1"])
        r["drop_reference"] = ref["label"]


def skipped_latency_row(model: str, variant: str, provider: str, tower: str, reason: str,
                        label: Optional[str] = None, bundle: Optional[str] = None) -> dict:
    """The report row saying a (model, variant, provider, tower) was not measured, and why."""
    return {"kind": "latency", "model": model, "engine": "onnxruntime", "variant": variant, "provider": provider,
            "label": label or label_for("onnxruntime", variant), "bundle": bundle, "tower": tower,
            "status": "skipped", "reason": reason}


def provider_skip_rows(runners: list[Runner], skipped: dict[str, str], towers: Sequence[str]) -> list[dict]:
    """One skipped row per (model, variant, asked-for provider, tower) so the report says what is missing and why."""
    seen, rows = set(), []
    for r in runners:
        if r.engine != "onnxruntime":
            continue
        for provider, reason in skipped.items():
            for tower in towers:
                key = (r.model_id, r.variant, provider, tower)
                if tower in r.factories and key not in seen:
                    seen.add(key)
                    rows.append(skipped_latency_row(r.model_id, r.variant, provider, tower, reason, r.label, r.bundle))
    return rows


def run_bench(
    runners: list[Runner],
    config: BenchConfig,
    skipped_providers: Optional[dict[str, str]] = None,
    extra_rows: Sequence[dict] = (),
    progress: bool = True,
) -> dict:
    """Measure everything the config asks for over the runners and return the report dict (nothing written)."""
    from runtime.bench_report import compute_ratios

    rows = provider_skip_rows(runners, skipped_providers or {}, config.towers)
    for provider, reason in (skipped_providers or {}).items():
        log(f"skipped provider {provider}: {reason}")
    rows += latency_rows(runners, config, progress)
    rows += coverage_rows(runners, config.towers)
    with tempfile.TemporaryDirectory(prefix="edgeclip-bench-") as tmp:
        jpeg = config.image or make_test_jpeg(Path(tmp))
        onnx_runners = [r for r in runners if r.bundle]
        device = [r for r in onnx_runners if config.device_variants is None or r.variant in config.device_variants]
        photos = config.photos or Path(tmp) / "photos"
        if config.end_to_end:
            rows += end_to_end_rows(onnx_runners, config, jpeg, progress)
            rows += photo_rows(device, config.plan, config.threads, photos)
            if config.stream_images:
                rows += stream_rows(device, config.threads, photos, config.stream_images)
        if config.cold_start:
            rows += process_rows(onnx_runners, config, jpeg, progress)
            rows += tower_probe_rows(device, config.threads, jpeg, config.cold_repeats)
    if config.accuracy:
        rows += accuracy_rows(runners, config, progress)
    rows += [{**row, "measured_in": "baseline rows file"} for row in extra_rows]
    cfg = json.loads(json.dumps({k: v for k, v in asdict(config).items() if k != "notes"}, default=str))
    return {
        "schema": SCHEMA,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": config.command,
        "machine": machine_info(),
        "config": cfg,
        "notes": list(config.notes),
        "rows": rows,
        "ratios": compute_ratios(rows),
    }


def exit_status(report: dict) -> int:
    """0 when every measurement ran or was skipped for a stated reason, 1 when any errored."""
    return 1 if any(r.get("status") == "error" for r in report["rows"]) else 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def add_timing_arguments(ap: argparse.ArgumentParser) -> None:
    """--quick, --runs and --processes (shared with the build side's side-by-side command)."""
    ap.add_argument("--quick", action="store_true",
                    help=f"smoke-level run: {QUICK.warmup} warm-up and {QUICK.runs} timed calls in "
                    f"{QUICK.processes} process per runner, 1 cold start")
    ap.add_argument("--runs", type=_positive, metavar="N",
                    help=f"timed calls per process (default {FULL.runs}, quick {QUICK.runs})")
    ap.add_argument("--processes", type=_positive, metavar="N",
                    help=f"fresh processes per runner, alternating between runners (default {FULL.processes}, "
                    f"quick {QUICK.processes})")


def timing_plan(args: argparse.Namespace) -> TimingPlan:
    """The TimingPlan that --quick, --runs and --processes ask for."""
    plan = QUICK if args.quick else FULL
    if args.runs:
        plan = replace(plan, runs=args.runs, min_runs=min(plan.min_runs, args.runs))
    if args.processes:
        plan = replace(plan, processes=args.processes)
    return plan


def build_parser() -> argparse.ArgumentParser:
    """The command line (see --help)."""
    ap = argparse.ArgumentParser(
        prog="python -m runtime.bench",
        description="Benchmark edgeclip bundles on every execution provider of this onnxruntime: tower latency "
        "(median, p90) at each batch, JPEG -> embedding end to end, cold start and peak RSS in fresh processes, "
        "and accuracy (top-1 with --eval-dir: zero-shot on a class folder, image->caption retrieval on shards; "
        "cosine vs the fp32 bundle of the same model). Writes "
        "report.json, report.md and report.png into --report.",
        epilog="Exit codes: 0 ok, 1 a bundle could not be loaded or a measurement failed (report still written), "
        "2 usage error.",
    )
    ap.add_argument("--bundle", nargs="+", required=True, type=Path, metavar="DIR", help="bundle directories or hf-hub:ORG/REPO names")
    ap.add_argument("--report", type=Path, required=True, metavar="OUT", help="output folder for report.*")
    ap.add_argument("--providers", nargs="+", metavar="EP",
                    help="providers to run (cpu, xnnpack, nnapi, ... or full names); default: all of this build "
                    "plus XNNPACK and NNAPI (recorded as skipped when absent)")
    ap.add_argument("--towers", nargs="+", choices=TOWERS, default=list(TOWERS))
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8], metavar="N")
    add_timing_arguments(ap)
    ap.add_argument("--threads", type=thread_count, metavar="N",
                    help="intra-op threads per session, 1 to 4 per CPU core (default: onnxruntime's choice)")
    ap.add_argument("--eval-dir", type=Path, metavar="PATH",
                    help="ImageNet-style class folder (prompts 'a photo of a {class}.', optional prompts.json) or "
                    "reinforced .tar shards (image->caption retrieval) for top-1")
    ap.add_argument("--eval-limit", type=int, default=500, metavar="N", help="at most N evaluation images")
    ap.add_argument("--image", type=Path, metavar="JPG", help="image for end-to-end and cold start (default: generated)")
    ap.add_argument("--baseline-rows", nargs="+", type=Path, default=[], metavar="JSON",
                    help="rows measured elsewhere (a JSON list of rows, or another report.json such as one from "
                    "`python -m benchmarks.side_by_side`) to show next to this run; ratios that use them say "
                    "'same run: no'")
    ap.add_argument("--stream-images", type=int, metavar="N",
                    help="12 MP real-photo JPEGs for the streaming-throughput row (default 200, with --quick 0; "
                    "0: no such row)")
    ap.add_argument("--photos", type=Path, metavar="DIR",
                    help="folder for the real-photo JPEGs of the end-to-end and streaming rows, reused across runs "
                    "(default: a temporary folder)")
    ap.add_argument("--no-end-to-end", action="store_true")
    ap.add_argument("--no-cold-start", action="store_true")
    ap.add_argument("--no-accuracy", action="store_true")
    ap.add_argument("--no-plot", action="store_true", help="skip report.png")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    ap.add_argument("--json", action="store_true", help="print the report JSON on stdout")
    return ap


def main(argv: Optional[list[str]] = None) -> int:
    """CLI entry point."""
    from runtime.bench_report import write_report

    ap = build_parser()
    args = ap.parse_args(argv)
    if any(b < 1 for b in args.batches):
        ap.error("--batches must be positive")
    from edgeclip.hub import is_hub_ref

    for path in [*args.bundle, *args.baseline_rows, *([args.image] if args.image else [])]:
        if not path.exists() and not is_hub_ref(path):
            ap.error(f"not found: {path}")
    import onnxruntime as ort

    try:
        run, skipped = provider_plan(args.providers, ort.get_available_providers())
    except ValueError as exc:
        ap.error(str(exc))
    config = BenchConfig(
        towers=args.towers, batches=args.batches, plan=timing_plan(args), threads=args.threads, eval_dir=args.eval_dir,
        eval_limit=args.eval_limit, image=args.image, end_to_end=not args.no_end_to_end,
        cold_start=not args.no_cold_start, cold_repeats=1 if args.quick else 3, accuracy=not args.no_accuracy,
        stream_images=max(0, args.stream_images if args.stream_images is not None else 0 if args.quick else 200),
        photos=args.photos,
        command="python -m runtime.bench " + shlex.join(argv if argv is not None else sys.argv[1:]),
    )
    try:
        runners = [r for b in args.bundle for r in bundle_runners(b, run, args.threads)]
        extra = [row for f in args.baseline_rows for row in _read_rows(f)]
        report = run_bench(runners, config, skipped, extra, progress=not args.no_progress)
    except (EdgeclipError, EvalDataError, OSError, ValueError) as exc:
        log(f"error: {exc}")
        return 1
    paths = write_report(report, args.report, plot=not args.no_plot)
    for p in paths:
        log(f"wrote {p}")
    if args.json:
        print(json.dumps(report, indent=2))
    return exit_status(report)


def _read_rows(path: Path) -> list[dict]:
    """Rows from a JSON file: a list of row dicts, or a report with a `rows` list."""
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    rows = data.get("rows") if isinstance(data, dict) else data
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "kind" in r for r in rows):
        raise ValueError(f"{path}: expected a list of row objects with a 'kind' field (or a report with 'rows')")
    return rows


if __name__ == "__main__":
    sys.exit(main())
