"""report.json / report.md of an INT8 bundle: fidelity, retrieval, teacher agreement, speed, choices."""

from __future__ import annotations

import json
from pathlib import Path

from quantize.measure import LATENCY_ROUNDS

# Default quality bars (fidelity to fp32 and speed-up), set for an input-sensitive S0 checkpoint; the report says which hold.
DEFAULT_BARS = {
    "image": {"mean_cos": 0.985, "centered_mean_cos": 0.90, "speedup": 1.2},
    "text": {"mean_cos": 0.995, "centered_mean_cos": 0.95, "speedup": 1.5},
}


def check_bars(tower: str, fidelity: dict, latency: dict | None, bars: dict | None = None) -> dict:
    """Which bars the tower meets; ``binding`` lists the unmet ones (empty when all hold)."""
    bars = (bars or DEFAULT_BARS)[tower]
    values = {"mean_cos": fidelity["mean_cos"], "centered_mean_cos": fidelity["centered_mean_cos"],
              "speedup": latency["speedup"] if latency else None}
    met = {k: (values[k] is not None and values[k] >= v) for k, v in bars.items()}
    return {"bars": bars, "met": met, "binding": [k for k, ok in met.items() if not ok]}


def _f(x, nd: int = 4) -> str:
    return "—" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def _fetch_lines(fetch: dict | None) -> list[str]:
    """How the DataCompDR-12M set was fetched (when it was): revisions, URLs tried, skipped and why."""
    if not fetch:
        return []
    revs = ", ".join(f"{repo}@{(d.get('revision') or '?')[:12]}" for repo, d in fetch["datasets"].items())
    return [f"Fetched from {revs}: {fetch['samples']} samples from {fetch['urls_tried']} URLs; skipped "
            f"{fetch['skipped']} {fetch['skip_reasons'] or ''}", ""]


def _storage_lines(tower: dict) -> list[str]:
    """How the tower's token table and kept-float weights are stored, and the file size."""
    lines = [f"File: {tower['file_mb']} MB."] if tower.get("file_mb") is not None else []
    tt = tower.get("token_table")
    for tab in (tt or {}).get("tables", []):
        fid = tt.get("int8_table_fidelity") or {}
        why = ("the tower with only this table in INT8 used at most half of the fidelity budget"
               if tt["storage"] == "int8" else "INT8 rows alone used more than half of the fidelity budget")
        lines.append(f"Token table `{tab['tensor']}` {'x'.join(map(str, tab['shape']))}: stored {tt['storage']} "
                     f"({tab['float_bytes'] / 1e6:.1f} -> {tab['stored_bytes'] / 1e6:.1f} MB, table SQNR "
                     f"{tab['sqnr_db']:.1f} dB); with only INT8 rows the search set's mean cos was "
                     f"{_f(fid.get('mean_cos'))}, centered {_f(fid.get('centered_mean_cos'))}: {why}.")
    half = tower.get("fp16_weights") or []
    if half:
        before, after = (sum(h[k] for h in half) / 1e6 for k in ("float_bytes", "stored_bytes"))
        lines.append(f"Kept-float weights stored fp16: {len(half)} tensors, {before:.1f} -> {after:.1f} MB, "
                     f"SQNR ≥ {min(h['sqnr_db'] for h in half):.1f} dB.")
    return lines


def render_markdown(report: dict) -> str:
    """A human summary of ``report`` (every number comes from the JSON next to it)."""
    cal = report["calibration"]
    lines = [f"# INT8 report: {report['model_id']} for target `{report['target']}`", "",
             f"Calibration: {cal['method']} on {cal['images']} images / {cal['captions']} captions from "
             f"`{cal['source']}`; skipped samples: **{cal['skipped']}** {cal['skip_reasons'] or ''}", "",
             *_fetch_lines(cal.get("fetch")),
             f"Peak memory of the run: {report.get('peak_rss_mb')} MB; took {report.get('seconds')} s.", "",
             f"Evaluation (held out, never used for calibration or search): {report['eval']['images']} images, "
             f"{report['eval']['captions']} captions." + (f" Small set: {report['eval']['split_note']}."
                                                         if report["eval"].get("split_note") else ""), "",
             "## Towers (INT8 vs fp32 on the evaluation set)", "",
             "| tower | precision | mean cos | min cos | centered mean cos | centered min cos | fp32 ms | int8 ms | "
             "speed ratio | speed ratio, 1 thread | unmet bars |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, t in report["towers"].items():
        fid, lat, lat1 = t.get("fidelity") or {}, t.get("latency") or {}, t.get("latency_1_thread") or {}
        lines.append(f"| {name} | {t['precision']} | {_f(fid.get('mean_cos'))} | {_f(fid.get('min_cos'))} | "
                     f"{_f(fid.get('centered_mean_cos'))} | {_f(fid.get('centered_min_cos'))} | "
                     f"{_f(lat.get('fp32_ms'), 1)} | {_f(lat.get('int8_ms'), 1)} | {_f(lat.get('speedup'), 2)} | "
                     f"{_f(lat1.get('speedup'), 2)} | {', '.join(t['bars']['binding']) or 'none'} |")
    lines += ["", "Latency: median of back-to-back runs, each graph alone in its own process, fp32 and int8 processes "
              f"alternating {LATENCY_ROUNDS} times; batch 1, {report.get('latency_threads', 2)} threads (the bar) and 1 thread, CPU EP. "
              + (report.get("latency_note") or "")]
    ret = report.get("retrieval")
    if ret:
        lines += ["", "## Retrieval and teacher agreement", "", "| model | image→caption R@1 | caption→image R@1 | "
                  "teacher top-5 overlap |", "|---|---|---|---|"]
        for m in ("fp32", "int8"):
            lines.append(f"| {m} | {_f(ret[m]['image_to_text'], 3)} | {_f(ret[m]['text_to_image'], 3)} | "
                         f"{_f((report.get('teacher_top5_overlap') or {}).get(m), 3)} |")
    zs = report.get("zero_shot")
    if zs:
        lines += ["", f"Zero-shot top-1: fp32 {zs['fp32']:.4f}, int8 {zs['int8']:.4f} "
                  f"(drop {zs['drop_points']:.2f} points, {zs['images']} images)."]
    for name, t in report["towers"].items():
        lines += ["", f"## {name} tower: {t['reason']}", "", *_storage_lines(t)]
        if t.get("kept_float"):
            lines += ["Kept in float (most damaging when quantized alone; centered-embedding SQNR in dB):", ""]
            lines += [f"- `{k['node']}`: {k['why']}" for k in t["kept_float"]]
        curve = t.get("curve") or []
        if curve:
            lines += ["", "Trade-off curve (search set):", "", "| recipe | int8 nodes | mean cos | centered cos | "
                      "speed ratio |", "|---|---|---|---|---|"]
            for p in curve:
                lat = p.get("latency") or {}
                lines.append(f"| {p['label']} | {p['quantized_nodes']} | {_f(p['metrics']['mean_cos'])} | "
                             f"{_f(p['metrics']['centered_mean_cos'])} | {_f(lat.get('speedup'), 2)} |")
    return "\n".join(lines) + "\n"


def write_report(report: dict, directory: Path) -> tuple[Path, Path]:
    """Write report.json and report.md into ``directory`` (a staging folder; the bundle writer renames)."""
    js, md = directory / "report.json", directory / "report.md"
    js.write_text(json.dumps(report, indent=2, default=float) + "\n", encoding="utf-8")
    md.write_text(render_markdown(report), encoding="utf-8")
    return js, md
