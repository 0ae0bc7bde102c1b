"""Benchmark report files: report.json, report.md (tables) and report.png (accuracy vs latency, like MobileCLIP's figure 1).

Each file is written to a temp name in the output folder and renamed into place. matplotlib is imported
only for the plot and is optional: without it the report says the PNG was skipped.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable, Optional

from edgeclip.files import atomic_path

INT8_LABEL = "edgeclip int8-cpu"
BASELINES = ("torch fp32", "ort fp32", "ort int8-dynamic")
CPU_LIKE = ("CPUExecutionProvider", "torch-cpu")
COS_COLUMNS = ("image_cos_mean", "image_centered_cos_mean", "text_cos_mean", "text_centered_cos_mean")


def _latency(rows: list[dict], **match) -> dict[tuple, dict]:
    """Latency rows by (model, label, tower, batch); rows measured in this run win over merged-in ones."""
    out = {}
    for r in sorted(rows, key=lambda r: "measured_in" not in r):
        if r.get("kind") == "latency" and r.get("status") == "ok" and all(r.get(k) == v for k, v in match.items()):
            out[(r["model"], r["label"], r["tower"], r["batch"])] = r
    return out


def compute_ratios(rows: list[dict]) -> list[dict]:
    """For each model at batch 1 on the CPU: edgeclip INT8 (cpu target) latency / each baseline's latency.

    ratio < 1 means INT8 is faster; `speedup` is the inverse. `image+text` sums the two towers' medians.
    `same_run` is false when either row came from a --baseline-rows file rather than this run.
    """
    lat = {k: v for k, v in _latency(rows, batch=1).items() if v["provider"] in CPU_LIKE}
    out = []
    for model in sorted({k[0] for k in lat}):
        for tower in ("image", "text", "image+text"):
            parts = ("image", "text") if tower == "image+text" else (tower,)

            def total(label: str) -> tuple[Optional[float], bool]:
                got = [lat.get((model, label, t, 1)) for t in parts]
                if any(g is None for g in got):
                    return None, False
                return sum(g["median_ms"] for g in got), all("measured_in" not in g for g in got)

            int8_ms, int8_here = total(INT8_LABEL)
            if int8_ms is None:
                continue
            for base in BASELINES:
                base_ms, base_here = total(base)
                if base_ms is None:
                    continue
                out.append({"model": model, "tower": tower, "batch": 1, "int8": INT8_LABEL, "baseline": base,
                            "int8_ms": int8_ms, "baseline_ms": base_ms, "ratio": int8_ms / base_ms,
                            "speedup": base_ms / int8_ms, "same_run": int8_here and base_here})
    return out


def _fmt(v, digits: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _table(headers: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_fmt(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]
    return lines + [""]


def _short(provider: str) -> str:
    return provider.removesuffix("ExecutionProvider")


def _named_bundles(rows: list[dict]) -> list[dict]:
    """Rows whose (model, label) several bundles share get the bundle's folder name in their label."""
    bundles: dict[tuple, set] = {}
    for r in rows:
        if r.get("bundle"):
            bundles.setdefault((r.get("model"), r.get("label")), set()).add(r["bundle"])
    return [{**r, "label": f"{r['label']} ({Path(r['bundle']).name})"}
            if len(bundles.get((r.get("model"), r.get("label")), ())) > 1 else r for r in rows]


def render_markdown(report: dict) -> str:
    """The human-readable report: ratios first, then latency, end-to-end, cold start, memory, accuracy, skips."""
    rows = _named_bundles(report["rows"])
    m = report["machine"]
    cfg = report["config"]
    plan = cfg.get("plan", {})
    md = [
        "# edgeclip benchmark report",
        "",
        f"- created: {report['created_utc']}",
        f"- command: `{report['command']}`" if report.get("command") else "- command: (library call)",
        f"- machine: {m['platform']} ({m['machine']}, {m['cpu_count']} CPUs), Python {m['python']}, "
        f"onnxruntime {m['onnxruntime']} (providers: {', '.join(map(_short, m['available_providers']))})",
        f"- timing: each runner alone in fresh processes ({plan.get('processes')} per runner, alternating with "
        f"the other runners; in each, {plan.get('warmup')} untimed warm-up call(s), then up to {plan.get('runs')} "
        f"timed calls per tower and batch), so no other session's threads share the cores and ratios inside a "
        f"table hold on a noisy machine; threads: {cfg.get('threads') or 'onnxruntime default'}",
        "",
    ]
    md += [f"- note: {n}" for n in report.get("notes", [])] + ([""] if report.get("notes") else [])
    if report.get("ratios"):
        md += ["## INT8 (cpu target) vs what users run today, batch 1, CPU", ""]
        md += _table(
            ["model", "tower", "baseline", "INT8 ms", "baseline ms", "INT8 / baseline", "speed-up", "same run"],
            [[r["model"], r["tower"], r["baseline"], r["int8_ms"], r["baseline_ms"], r["ratio"], f"{r['speedup']:.2f}×",
              "yes" if r["same_run"] else "no"] for r in report["ratios"]],
        )
    ok = [r for r in rows if r["kind"] == "latency" and r.get("status") == "ok"]
    if ok:
        md += ["## Tower latency", ""]
        md += _table(
            ["model", "runner", "provider", "tower", "batch", "median ms", "p90 ms", "ms / item", "n"],
            [[r["model"], r["label"], _short(r["provider"]), r["tower"], r["batch"], r["median_ms"], r.get("p90_ms"),
              r.get("per_item_ms", r["median_ms"] / r["batch"]), r.get("n")] for r in ok],
        )
    coverage = [r for r in rows if r["kind"] == "coverage" and r.get("status") == "ok"]
    if coverage:
        md += ["## Provider coverage (static analysis of the graphs, whether or not the provider is in this build)", ""]
        md += _table(
            ["model", "runner", "tower", "provider", "partitions", "multiply-accumulates on provider", "hand-overs",
             "layout changes"],
            [[r["model"], r["label"], r["tower"], _short(r["provider"]), r["partitions"],
              f"{100 * r['mac_share']:.1f} %" if r.get("mac_share") is not None else "–", r["handovers"],
              r["layout_changes"] if r.get("layout_changes") is not None else "–"] for r in coverage],
        )
    e2e = [r for r in rows if r["kind"] == "end_to_end" and r.get("status") == "ok"]
    if e2e:
        md += ["## End to end: JPEG file → normalized embedding (batch 1)", ""]
        md += _table(
            ["model", "runner", "provider", "median ms", "p90 ms", "decode ms", "decode + preprocess ms",
             "decode + preprocess share"],
            [[r["model"], r["label"], _short(r["provider"]), r["median_ms"], r["p90_ms"], r["decode_ms"],
              r["decode_preprocess_ms"], f"{100 * r['preprocess_share']:.0f} %" if r.get("preprocess_share") else "–"]
             for r in e2e],
        )
    cold = [r for r in rows if r["kind"] == "cold_start" and r.get("status") == "ok"]
    mem = {(r["model"], r["label"], r["provider"]): r for r in rows if r["kind"] == "memory" and r.get("status") == "ok"}
    if cold:
        md += ["## Cold start (fresh process: import + session + first embedding) and peak RSS", ""]
        md += _table(
            ["model", "runner", "provider", "import s", "sessions s", "first image s", "cold start s",
             "process wall s", "peak RSS MiB (both towers)"],
            [[r["model"], r["label"], _short(r["provider"]), r.get("import_s"), r.get("session_s"),
              r.get("first_image_s"), r.get("cold_start_s"), r.get("process_wall_s"),
              mem.get((r["model"], r["label"], r["provider"]), {}).get("peak_rss_mb")] for r in cold],
        )
    md += _device_sections(rows)
    acc = [r for r in rows if r["kind"] == "accuracy" and r.get("status") == "ok"]
    if acc:
        md += ["## Accuracy", ""]
        md += _table(
            ["model", "runner", "provider", "eval", "task", "top-1 %", "drop (pts)", "vs", "image cos",
             "image centered cos", "text cos", "text centered cos"],
            [[r["model"], r["label"], _short(r["provider"]), Path(str(r["eval"])).name or r["eval"], task_label(r),
              100 * r["top1"] if r.get("top1") is not None else None, r.get("top1_drop_pts"),
              r.get("drop_reference", "–"), *(_fmt(r.get(k), 4) for k in COS_COLUMNS)] for r in acc],
        )
        md += ["Cosines compare each runner's embeddings with the same model's fp32 bundle on the CPU provider "
               "(centered: each side minus its mean embedding over the inputs). Drop: top-1 points below the torch "
               "fp32 row when present, else ORT fp32 on CPU.", ""]
        md += [TASK_NOTES[task] + "\n" for task in sorted({r.get("task") for r in acc if r.get("task")})]
        if any(r.get("eval") == GENERATED for r in acc):
            md += [GENERATED_NOTE, ""]
    bad = [r for r in rows if r.get("status") in ("skipped", "error")]
    if bad:
        groups: dict[tuple, list[str]] = {}
        for r in bad:
            key = (r["kind"], _short(str(r.get("provider"))), r["status"], str(r.get("reason", "")))
            what = f"{r.get('model')} {r.get('label')}" + (f" {r['tower']}" if r.get("tower") else "")
            groups.setdefault(key, []).append(what)
        md += ["## Skipped and failed", ""]
        md += _table(["what", "provider", "status", "reason", "runs affected"],
                     [[kind, provider, status, reason.replace("|", "/").replace("\n", " "), "; ".join(dict.fromkeys(whats))]
                      for (kind, provider, status, reason), whats in groups.items()])
    return "\n".join(md)


def _device_sections(rows: list[dict]) -> list[str]:
    """Tables of the device-path rows (runtime.bench_device): real-photo end to end, streaming, cold start and
    peak RSS per set of towers."""
    md: list[str] = []
    photo = [r for r in rows if r["kind"] == "end_to_end_photo" and r.get("status") == "ok"]
    if photo:
        md += ["## Real photos end to end: JPEG file → embedding, against the image tower alone (same processes)", ""]
        md += _table(
            ["model", "runner", "provider", "photo", "mode", "median ms", "p90 ms", "tower alone ms",
             "end to end ÷ tower"],
            [[r["model"], r["label"], _short(r["provider"]), f"{r['megapixels']} MP", r["mode"], r["median_ms"],
              r.get("p90_ms"), r["tower_median_ms"], f"{r['ratio_to_tower']:.2f}×"] for r in photo],
        )
    stream = [r for r in rows if r["kind"] == "stream" and r.get("status") == "ok"]
    if stream:
        md += ["## Streaming: images/s over distinct 12 MP JPEGs, one process", ""]
        md += _table(
            ["model", "runner", "provider", "images", "batch", "decode threads", "embed_images (fast) img/s",
             "encode_image loop, exact img/s", "encode_image loop, fast img/s", "÷ loop exact", "÷ loop fast"],
            [[r["model"], r["label"], _short(r["provider"]), r["n_images"], r["batch_size"], r["workers"],
              r["stream_fast_images_per_s"], r["sequential_exact_images_per_s"], r["sequential_fast_images_per_s"],
              f"{r['speedup_vs_sequential_exact']:.2f}×", f"{r['speedup_vs_sequential_fast']:.2f}×"] for r in stream],
        )
    towers = [r for r in rows if r["kind"] == "cold_start_towers" and r.get("status") == "ok"]
    if towers:
        md += ["## Cold start and peak RSS per set of towers (fresh processes, median; peak RSS: max)", ""]
        md += _table(
            ["model", "runner", "provider", "towers", "import s", "Encoder() s", "first image s", "first text s",
             "to first embedding s", "to first image + first text s",
             "peak RSS MiB after import / Encoder() / first image", "peak RSS MiB"],
            [[r["model"], r["label"], _short(r["provider"]), TOWER_LABELS.get(r["towers"], r["towers"]),
              *(_fmt(r.get(k), 3) for k in ("import_s", "session_s", "first_image_s", "first_text_s", "cold_start_s",
                                            "cold_start_image_and_text_s")),
              " / ".join(_fmt(r.get(k), 0) for k in ("rss_after_import_mb", "peak_rss_encoder_mb",
                                                      "peak_rss_first_image_mb")),
              r.get("peak_rss_mb")] for r in towers],
        )
        md += ["image / text: `Encoder(bundle, towers=\"image\")` (or \"text\"), which opens that tower in the "
               "constructor and never the other. both: `Encoder(bundle)`, which opens each tower (and the tokenizer) "
               "on first use. Peak RSS is VmHWM at the end (after every embedding the row names).", ""]
    return md


TOWER_LABELS = {"image": "image only", "text": "text only", "both": "both, opened on first use"}


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    with atomic_path(path) as tmp:
        write(str(tmp))


GENERATED = "generated inputs"  # the eval description of rows measured without --eval-dir/--eval-shards
TASKS = {"zero-shot": "zero-shot top-1", "retrieval": "image→caption retrieval top-1"}
TASK_NOTES = {
    "zero-shot": "Zero-shot top-1: each image against the mean prompt embedding of every class of the folder.",
    "retrieval": "Image→caption retrieval top-1 (shards): each image against the captions of all loaded samples; "
                 "right when its own caption ranks first. Not a zero-shot classification figure.",
}
GENERATED_NOTE = (
    "Fidelity on generated inputs (random pixels and token ids; no --eval-dir given): such inputs lie far from "
    "the photos and captions INT8 scales are calibrated on, so cosines here, centered ones most, can be far lower "
    "than on real data (the demo INT8 bundle: image centered cosine 0.61 here, 0.9995 on its 400 eval images). "
    "Use them to compare runners with each other; judge accuracy with --eval-dir."
)


def task_label(row: dict) -> str:
    """What the row's top-1 measures: zero-shot over N classes, or image→caption retrieval among N captions."""
    task = row.get("task")
    if task is None:
        return "–"
    n = row.get("n_labels")
    return TASKS.get(task, task) + (f" ({n} {'classes' if task == 'zero-shot' else 'captions'})" if n else "")


def plot_points(rows: list[dict]) -> list[dict]:
    """One point per (model, runner, provider): image+text batch-1 latency with its top-1 and image cosine."""
    lat = _latency(rows, batch=1)
    acc = {(r["model"], r["label"], r["provider"]): r for r in rows if r["kind"] == "accuracy" and r.get("status") == "ok"}
    points = []
    for (model, label, provider), a in acc.items():
        parts = [v for (m, lb, t, _), v in lat.items() if m == model and lb == label and v["provider"] == provider]
        if not parts:
            continue
        points.append({"model": model, "label": label, "provider": provider,
                       "latency_ms": sum(p["median_ms"] for p in parts),
                       "towers": "+".join(sorted(p["tower"] for p in parts)),
                       "top1": a.get("top1"), "task": a.get("task"),
                       "cos": a.get("image_centered_cos_mean", 1.0 if a.get("cos_reference", "").startswith(label) else None)})
    return points


def _place_labels(fig, ax, points: list[dict], key: str, scale: float, with_model: bool) -> None:
    """Label each point at the first offset (right of it, then above/below in steps) where the label overlaps
    no label placed before and stays inside the axes; points are taken left to right."""
    from matplotlib.transforms import Bbox

    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    offsets = [(6, 4), (6, -12), (6, 14), (6, -22), (6, 24), (6, -32), (-6, 4), (6, 34), (6, -42)]
    marker = 5 * fig.dpi / 72  # half a marker, in pixels: labels keep off the other points too
    placed = [Bbox.from_extents(x - marker, y - marker, x + marker, y + marker)
              for x, y in ax.transData.transform([(p["latency_ms"], p[key] * scale) for p in points])]
    for p in points:
        text = (f"{p['model'].removeprefix('mobileclip-')} " if with_model else "") + p["label"] + (
            "" if p["provider"] in CPU_LIKE else f" ({_short(p['provider'])})")
        # The first offset comes again last: with no free spot, keep it rather than lose the label.
        for i, (dx, dy) in enumerate(offsets + offsets[:1]):
            ann = ax.annotate(text, (p["latency_ms"], p[key] * scale), textcoords="offset points", xytext=(dx, dy),
                              fontsize=8, ha="left" if dx > 0 else "right")
            box = ann.get_window_extent(renderer)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            if i == len(offsets) or (inside and not any(box.overlaps(other) for other in placed)):
                placed.append(box)
                break
            ann.remove()


def render_plot(report: dict, path: str) -> None:
    """Accuracy (top-1, when any row has it) and fidelity (image centered cosine vs fp32) against batch-1 latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    points = plot_points(report["rows"])
    models = sorted({p["model"] for p in points})
    labels = sorted({p["label"] for p in points})
    colors = {m: plt.cm.tab10(i % 10) for i, m in enumerate(models)}
    markers = {lb: "osD^vP*Xph"[i % 10] for i, lb in enumerate(labels)}
    panels = [("cos", "image embedding centered cosine vs fp32", 1.0, "Fidelity to fp32 vs latency")]
    tasks = {p["task"] for p in points if p.get("top1") is not None}
    if tasks:
        what = TASKS[tasks.pop()] if len(tasks) == 1 and tasks <= TASKS.keys() else "top-1: zero-shot or retrieval"
        panels.insert(0, ("top1", f"{what} (%)", 100.0, "Accuracy vs latency"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5.5), squeeze=False)
    for ax, (key, ylabel, scale, title) in zip(axes[0], panels):
        shown = sorted((p for p in points if p.get(key) is not None), key=lambda p: p["latency_ms"])
        for p in shown:
            ax.scatter(p["latency_ms"], p[key] * scale, color=colors[p["model"]], marker=markers[p["label"]], s=70,
                       edgecolor="black", linewidth=0.5, zorder=3)
        ax.set_xscale("log")
        ax.margins(x=0.25, y=0.12)
        if len(shown) <= 12:  # more: colour (model) and marker (runner) say it, labels would only overlap
            _place_labels(fig, ax, shown, key, scale, with_model=len(models) > 1)
        span = max((p["latency_ms"] for p in shown), default=1.0) / min((p["latency_ms"] for p in shown), default=1.0)
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if span < 100 else (1.0,)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 0.5, 2, 1000: no "0" for small ticks
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("latency, image + text towers, batch 1 (ms, log scale)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        if not shown:
            ax.text(0.5, 0.5, "no rows", ha="center", va="center", transform=ax.transAxes)
    handles = [plt.Line2D([], [], color=colors[m], marker="o", linestyle="", label=m) for m in models]
    handles += [plt.Line2D([], [], color="gray", marker=markers[lb], linestyle="", label=lb) for lb in labels]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(3 * len(panels), len(handles)), fontsize=8,
                   frameon=False)
    m = report["machine"]
    fig.suptitle(f"edgeclip on {m['machine']} ({m['cpu_count']} CPUs), onnxruntime {m['onnxruntime']}", fontsize=11)
    fig.tight_layout(rect=(0, 0.06 * (1 + len(handles) // (3 * len(panels) + 1)), 1, 0.95))
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


def write_report(report: dict, out_dir: Path, plot: bool = True) -> list[Path]:
    """Write report.png (if asked and matplotlib is present), report.json and report.md; return the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if plot:
        try:
            _atomic_write(out_dir / "report.png", lambda tmp: render_plot(report, tmp))
            written.append(out_dir / "report.png")
        except ImportError as exc:
            report["notes"].append(f"report.png skipped: matplotlib is not installed ({exc})")
            print(f"skipped: report.png (matplotlib not installed: {exc})", file=sys.stderr, flush=True)
    _atomic_write(out_dir / "report.json", lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2) + "\n"))
    _atomic_write(out_dir / "report.md", lambda tmp: Path(tmp).write_text(render_markdown(report) + "\n"))
    return written + [out_dir / "report.json", out_dir / "report.md"]


def merge_reports(reports: list[dict]) -> dict:
    """One report from several runs (e.g. one per model): rows concatenated, commands and notes kept.

    Ratios stay within each run: every row keeps its own run's numbers, and a ratio is only formed between
    rows of one model, which one run measured."""
    if len(reports) == 1:
        return reports[0]
    machines = {json.dumps(r["machine"], sort_keys=True) for r in reports}
    if len(machines) > 1:
        raise ValueError("the reports come from different machines or onnxruntime versions; merging would mix them")
    seen: dict[tuple, int] = {}
    for i, r in enumerate(reports):
        for row in r["rows"]:
            if row.get("kind") == "latency" and row.get("status") == "ok":
                key = (row["model"], row["label"], row["provider"], row["tower"], row["batch"])
                if seen.setdefault(key, i) != i:
                    raise ValueError(f"two of the reports measured {' '.join(map(str, key))}; merge runs of different models")
    merged = dict(reports[0])
    merged["command"] = " ; ".join(r.get("command", "") for r in reports)
    merged["notes"] = list(dict.fromkeys(n for r in reports for n in r.get("notes", [])))
    merged["notes"].append(f"merged from {len(reports)} runs (`python -m runtime.bench_report` with several JSONs)")
    merged["rows"] = [row for r in reports for row in r["rows"]]
    merged["created_utc"] = max(r["created_utc"] for r in reports)
    return merged


def main(argv: Optional[list[str]] = None) -> int:
    """Re-render report.md and report.png from report.json files; several are merged into one report."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m runtime.bench_report", description=main.__doc__,
                                 epilog="Exit codes: 0 written, 1 a file is not a benchmark report or cannot be merged.")
    ap.add_argument("report_json", type=Path, nargs="+")
    ap.add_argument("--out", type=Path, help="output folder (default: the first JSON's folder; required to merge)")
    args = ap.parse_args(argv)
    if len(args.report_json) > 1 and args.out is None:
        ap.error("--out is required when merging several reports")
    reports = []
    for path in args.report_json:
        try:
            report = json.loads(path.read_text())
            if not isinstance(report["rows"], list) or not isinstance(report["machine"], dict):
                raise TypeError("rows must be a list and machine an object")
            reports.append(report)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"error: {path} is not a benchmark report ({exc})", file=sys.stderr)
            return 1
    try:
        report = merge_reports(reports)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    report["ratios"] = compute_ratios(report["rows"])
    for path in write_report(report, args.out or args.report_json[0].parent):
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
