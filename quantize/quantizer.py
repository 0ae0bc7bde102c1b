"""INT8 static quantization of an fp32 edgeclip bundle (torch-free): `quantize_bundle` and its `Quantizer`.

Calibrates on reinforced-dataset samples (stored augmented views and synthetic captions), keeps float whatever
hurts accuracy or speed on the target, and writes an INT8 bundle with report.json / report.md. The command
line (which may export the fp32 bundle first) is `python -m quantize.int8`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
from tqdm import tqdm

from edgeclip.errors import EdgeclipError
from quantize.calibration import CalibrationConfig, batched, calibrate
from quantize.data import CalibrationPlan, HeldOutSet, SamplePass, plan_sources
from quantize.errors import QuantizeError
from quantize.fetch_calibration import fetch_summary
from quantize.measure import embed, fidelity, input_sensitivity, latency_ratio, neighbour_overlap, recall_at_1
from quantize.recipes import Target, candidate_nodes, get_target, prepare_model
from quantize.report import check_bars, write_report
from quantize.search import Goals, TowerResult, TowerSearch
from quantize.session import make_session
from quantize.token_table import choose_table_storage, token_table_nodes

log = logging.getLogger("edgeclip")

TEXT_BATCH = 16


def _fixed_batch(tower: dict) -> int | None:
    return tower["batch"] if isinstance(tower.get("batch"), int) else None


def _check_target(manifest: dict, target: Target) -> None:
    """NNAPI needs fixed shapes and tanh GELU in the fp32 graphs, XNNPACK fixed shapes; say how to get them."""
    if not target.fixed_shapes:
        return
    for name, tower in manifest["towers"].items():
        if _fixed_batch(tower) is None or (target.gelu and tower.get("gelu") != target.gelu):
            raise QuantizeError(
                f"target {target.name} needs fixed-shape graphs{f' with {target.gelu} GELU' if target.gelu else ''}, "
                f"but the {name} tower has "
                f"batch={tower.get('batch')!r}, gelu={tower.get('gelu')!r}; export with `python -m export "
                f"{'--nnapi' if target.gelu else '--batch 1'}` "
                f"(or pass --checkpoint so this command exports it)")
        if target.name == "nnapi" and tower.get("opset", 0) > 16:
            log.warning("%s tower: opset %s keeps LayerNormalization, which splits NNAPI partitions; "
                        "`python -m export --nnapi` exports opset 16", name, tower.get("opset"))


def _image_feeds(images: list[np.ndarray], name: str, batch: int | None) -> list[dict]:
    return list(batched(images, batch or 8, name, fixed=batch is not None))


def _text_feeds(ids: np.ndarray, name: str, batch: int | None) -> list[dict]:
    return list(batched(list(ids), batch or TEXT_BATCH, name, fixed=batch is not None))


def _run(path: Path, feeds: list[dict], n: int) -> np.ndarray:
    return embed(make_session(path), feeds)[:n]


def _kept_float(result: TowerResult) -> list[dict]:
    if result.precision != "int8" or not result.chosen:
        return []
    sqnr = dict(result.sensitivity)
    return [{"node": n, "sqnr_db": sqnr.get(n),
             "why": f"quantized alone it leaves {sqnr[n]:.1f} dB centered SQNR (among the most damaging)"
             if n in sqnr else "kept float by the search"} for n in result.chosen.kept_float]


class Quantizer:
    """One quantization run over a loaded fp32 bundle (see ``quantize_bundle``)."""

    def __init__(self, bundle, target: Target, plan: CalibrationPlan, calib: CalibrationConfig, goals: Goals,
                 work: Path, search_samples: int, progress: bool, max_captions: int = 1024):
        self.bundle, self.target, self.plan, self.calib, self.goals = bundle, target, plan, calib, goals
        self.work, self.search_samples, self.progress = work, search_samples, progress
        self.manifest = bundle.manifest
        self.towers = dict(self.manifest["towers"])
        self.prepared: dict[str, Path] = {}
        self.max_captions = max_captions
        self.ranges: dict = {}
        self.tables: dict[str, dict] = {}  # per tower: how its token tables are stored and why

    def _prepare(self, name: str) -> Path:
        path = self.work / f"{name}-fp32.onnx"
        onnx.save(prepare_model(onnx.load(str(self.bundle.tower_path(name))), self.target), str(path))
        self.prepared[name] = path
        return path

    def _io(self, name: str) -> tuple[str, int | None]:
        tower = self.towers[name]
        return tower["inputs"][0]["name"], _fixed_batch(tower)

    def calibrate_all(self) -> SamplePass:
        """One pass over the samples: image calibration streams, captions and eval are collected."""
        spec = self.manifest.get("preprocess") if "image" in self.towers else None
        sample_pass = SamplePass(self.plan, spec, search_images=self.search_samples, text="text" in self.towers)
        if "image" in self.towers:
            path = self._prepare("image")
            name, batch = self._io("image")
            bar = tqdm(total=self.plan.samples, desc="calibrating image tower", unit="img", disable=not self.progress)
            views = sample_pass.image_views(on_sample=bar.update)
            self.ranges["image"] = calibrate(path, batched(views, batch or 8, name, fixed=batch is not None),
                                             self.calib, list(self.target.op_types))
            bar.close()
        else:
            sample_pass.drain()
        if "text" in self.towers:
            path = self._prepare("text")
            name, batch = self._io("text")
            captions = (sample_pass.captions or sample_pass.eval.captions)[:self.max_captions]
            ids = self._tokenize(captions)
            feeds = tqdm(_text_feeds(ids, name, batch), desc="calibrating text tower", unit="batch",
                         disable=not self.progress)
            self.ranges["text"] = calibrate(path, feeds, self.calib, list(self.target.op_types))
        return sample_pass

    def _tokenize(self, texts: list[str]) -> np.ndarray:
        from edgeclip.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(self.bundle.tokenizer_path, context_length=self.bundle.context_length)
        return tokenizer(texts)

    def search(self, name: str, search_inputs: list, speed_input: dict) -> TowerResult:
        path = self.prepared[name]
        model = onnx.load(str(path), load_external_data=False)
        cands = candidate_nodes(model, self.target)
        guard = self.target.provider == "CPUExecutionProvider"
        tower = TowerSearch(path, self.work, self.ranges[name], self.target, cands, search_inputs, speed_input,
                            self.goals, measure_speed_guard=guard, progress=self.progress, name=name)
        if token_table_nodes(model):  # measured against the search's own fp32 reference, computed once
            tower.base_path = self._store_tables(name, path, search_inputs, tower.reference)
        return tower.run()

    def _store_tables(self, name: str, path: Path, search_inputs: list, reference: np.ndarray) -> Path:
        """The graph the search quantizes: ``path`` with its token tables INT8 per row, or fp16 when the
        INT8 table alone (against the fp32 ``reference`` embeddings) would use more than half of the fidelity
        budget (``quantize.token_table``)."""
        base = self.work / f"{name}-tables.onnx"
        storage, records, metrics = choose_table_storage(path, base, search_inputs, reference, self.goals.min_cos,
                                                         self.goals.min_centered)
        self.tables[name] = {"storage": storage, "tables": records, "int8_table_fidelity": metrics}
        return base


def quantize_bundle(fp32_bundle: str | os.PathLike, out_dir: str | os.PathLike, target: str = "cpu",
                    calibration: Sequence[str | os.PathLike] | None = None, samples: int = 500,
                    eval_samples: int = 64, eval_paths: Sequence[str | os.PathLike] | None = None,
                    method: str = "minmax", moving_average: bool = True, num_bins: int = 2048,
                    percentile: float = 99.999, views: int = 1, rand_augment: bool = False,
                    goals: Goals | None = None, search_samples: int = 16, captions: int = 1024,
                    progress: bool = True) -> Path:
    """Quantize an fp32 bundle into ``out_dir`` (INT8 bundle + report.json + report.md); returns ``out_dir``."""
    from edgeclip.bundle import load_bundle
    from edgeclip.bundle.write import check_output, work_dir
    from edgeclip.errors import BundleError

    started = time.perf_counter()
    out_dir = check_output(out_dir)  # refuse an output that is in the way before the calibration
    try:
        bundle = load_bundle(fp32_bundle, verify=True)
    except BundleError as exc:
        raise QuantizeError(f"cannot use {fp32_bundle} as the fp32 bundle: {exc}") from exc
    tgt = get_target(target)
    _check_target(bundle.manifest, tgt)
    if any(t.get("precision") != "fp32" for t in bundle.manifest["towers"].values()):
        raise QuantizeError(f"{fp32_bundle} is not an fp32 bundle; quantize from the fp32 export")
    if not calibration:
        raise QuantizeError("no calibration data given (--calibration SHARDS_OR_IMAGES)")
    plan = plan_sources(calibration, eval_paths, samples, eval_samples, views, rand_augment)
    calib = CalibrationConfig(method=method, moving_average=moving_average, num_bins=num_bins, percentile=percentile)
    goals = goals or Goals()
    with work_dir(out_dir) as work:
        q = Quantizer(bundle, tgt, plan, calib, goals, work, search_samples, progress, max_captions=captions)
        sample_pass = q.calibrate_all()
        ev = sample_pass.eval
        results, final, towers_report = {}, {}, {}
        embeddings: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for name in tqdm(list(q.towers), desc="search + evaluation", unit="tower", disable=not progress):
            inp, batch = q._io(name)
            if name == "image":
                search_in = _image_feeds(sample_pass.search, inp, batch)
                eval_in, n = _image_feeds(ev.images, inp, batch), len(ev.images)
                speed_in = {inp: np.stack([ev.images[0]] * (batch or 1))}
            else:
                search_ids = q._tokenize(sample_pass.captions[:max(search_samples, 8) * 2] or ev.captions)
                search_in = _text_feeds(search_ids, inp, batch)
                eval_ids = q._tokenize(ev.pair_captions + ev.captions)
                eval_in, n = _text_feeds(eval_ids, inp, batch), len(eval_ids)
                speed_in = {inp: np.stack([eval_ids[0]] * (batch or 1))}
            res = results[name] = q.search(name, search_in, speed_in)
            # an fp32 tower ships unchanged, except for XNNPACK: its prepared graph has the 2-D linear layers
            final[name] = res.model_path or (q.prepared[name] if tgt.name == "xnnpack" else bundle.tower_path(name))
            ref, test = _run(q.prepared[name], eval_in, n), _run(final[name], eval_in, n)
            embeddings[name] = (ref, test)
            latency = latency_1 = None
            if res.precision == "int8":
                latency = latency_ratio(q.prepared[name], final[name], speed_in, runs=40)
                latency_1 = latency_ratio(q.prepared[name], final[name], speed_in, threads=1, runs=20)
            fid = fidelity(ref, test)
            towers_report[name] = {
                "precision": res.precision, "reason": res.reason, "fidelity": fid, "latency": latency,
                "latency_1_thread": latency_1,
                "input_sensitivity_fp32": input_sensitivity(ref), "bars": check_bars(name, fid, latency),
                "kept_float": _kept_float(res),
                "token_table": q.tables.get(name) if res.precision == "int8" else None,
                "fp16_weights": res.chosen.fp16_weights if res.precision == "int8" else [],
                "file_mb": round(os.path.getsize(final[name]) / 1e6, 2),
                **{k: v for k, v in res.as_dict().items() if k in ("candidates", "curve", "sensitivity_sqnr_db")}}
        report = _assemble_report(bundle.manifest, tgt, plan, calib, goals, sample_pass, towers_report,
                                  embeddings, ev, final, q, started)
        files, manifest = _int8_manifest(bundle, tgt, plan, calib, sample_pass, results, final, report, work)
        return _write(out_dir, manifest, files)


def _assemble_report(manifest, tgt, plan, calib, goals, sample_pass, towers_report, embeddings, ev: HeldOutSet,
                     final, q: Quantizer, started: float) -> dict:
    report = {
        "model_id": manifest.get("model_id"), "target": tgt.name,
        "calibration": {"source": plan.source, "method": calib.describe(), "images": sample_pass.calibration_images,
                        "captions": min(len(sample_pass.captions), q.max_captions), "views_per_image": plan.views,
                        "rand_augment": plan.rand_augment, "skipped": sample_pass.stats.skipped,
                        "skip_reasons": dict(sample_pass.stats.reasons), "notes": sample_pass.stats.notes,
                        "fetch": fetch_summary(plan.calibration)},
        "eval": {"images": len(ev.images), "captions": len(ev.captions) + len(ev.pair_captions),
                 "source": str(plan.evaluation or "held-out calibration samples"),
                 "split_note": sample_pass.split_note},
        "goals": {"min_cos": goals.min_cos, "min_centered": goals.min_centered, "min_speedup": goals.min_speedup},
        "towers": towers_report, "latency_threads": 2,
        "latency_note": "" if tgt.provider == "CPUExecutionProvider" else
        f"{tgt.provider} is not in this onnxruntime build: the ratio is measured on the CPU EP, indicative only, "
        "and the speed guard is not applied.",
        "retrieval": None, "teacher_top5_overlap": None, "zero_shot": None,
    }
    if "image" in embeddings and "text" in embeddings:
        n = len(ev.images)
        (ir, it), (tr, tt) = embeddings["image"], embeddings["text"]
        report["retrieval"] = {"fp32": recall_at_1(ir, tr[:n]), "int8": recall_at_1(it, tt[:n])}
        if ev.has_teacher:
            ti, txt = np.stack(ev.teacher_image), np.stack(ev.teacher_text)
            report["teacher_top5_overlap"] = {"fp32": neighbour_overlap(ir, tr[:n], ti, txt),
                                              "int8": neighbour_overlap(it, tt[:n], ti, txt)}
        report["zero_shot"] = _zero_shot(plan, q, final)
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["peak_rss_mb"] = _peak_rss_mb()
    return report


def _peak_rss_mb() -> float | None:
    """Peak resident memory of this process so far (Linux/macOS), for the 1,000-image memory claim."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def _dataset_root(plan: CalibrationPlan) -> Path | None:
    for p in (plan.evaluation or []) + plan.calibration:
        for cand in (Path(p), *Path(p).parents):
            if (cand / "eval" / "zero_shot.json").is_file() and (cand / "dataset.json").is_file():
                return cand
    return None


def _zero_shot(plan: CalibrationPlan, q: Quantizer, final: dict) -> dict | None:
    """Zero-shot top-1 of fp32 and int8 when the data is a dataset with a zero-shot eval split."""
    root = _dataset_root(plan)
    if root is None:
        return None
    from edgeclip.preprocess import preprocess_image
    from quantize.synthetic import evaluate_zero_shot, load_zero_shot

    zs = load_zero_shot(root)
    spec = q.manifest["preprocess"]
    (img_in, img_b), (txt_in, txt_b) = q._io("image"), q._io("text")
    scores = {}
    for label, paths in (("fp32", q.prepared), ("int8", final)):
        si, st = make_session(paths["image"]), make_session(paths["text"])

        def enc_image(images, si=si):
            x = [preprocess_image(im, spec) for im in images]
            return np.concatenate([si.run(None, f)[0] for f in _image_feeds(x, img_in, img_b)])[:len(x)]

        def enc_text(texts, st=st):
            ids = q._tokenize(list(texts))
            return np.concatenate([st.run(None, f)[0] for f in _text_feeds(ids, txt_in, txt_b)])[:len(ids)]

        scores[label] = evaluate_zero_shot(enc_image, enc_text, zs)
    return {**scores, "drop_points": 100 * (scores["fp32"] - scores["int8"]), "images": len(zs.images)}


def _int8_manifest(bundle, tgt: Target, plan, calib, sample_pass, results, final, report, work: Path):
    manifest = json.loads(json.dumps(bundle.manifest))
    files = {}
    for name, tower in manifest["towers"].items():
        tower["sha256"] = None
        tower["precision"] = results[name].precision
        tower.pop("alternates", None)  # ORT-format files of the fp32 graphs do not describe these graphs
        files[tower["file"]] = final[name]
        if results[name].precision != "int8":
            tower["fp32_reason"] = results[name].reason
    tok = manifest.get("tokenizer")
    if tok:
        tok["sha256"] = None
        files[tok["file"]] = bundle.tokenizer_path
    manifest.pop("extra_files", None)
    manifest["created_by"] = f"{manifest.get('created_by', 'edgeclip')} + quantize.int8"
    manifest["quantization"] = {
        "target": tgt.name, "method": f"static QDQ, {calib.describe()}",
        "calibration": {"source": plan.source, "count": sample_pass.calibration_images,
                        "skipped": sample_pass.stats.skipped},
        "activations": tgt.activations, "weights": tgt.weights, "per_channel": tgt.per_channel,
        "kept_float": {n: [k["node"] for k in report["towers"][n]["kept_float"]] for n in results},
        "towers_int8": [n for n, r in results.items() if r.precision == "int8"],
        "token_tables": {n: t["token_table"]["storage"] for n, t in report["towers"].items() if t.get("token_table")},
        "report": "report.json",
    }
    manifest["device_readiness"] = _readiness(final)
    js, md = write_report(report, work)
    files["report.json"], files["report.md"] = js, md
    return files, manifest


def _readiness(final: dict) -> dict | None:
    """NNAPI and XNNPACK partitions and multiply-accumulate share of each final graph (informative, never fatal)."""
    from runtime.readiness import tower_summary

    out = {}
    for name, path in final.items():
        try:
            out[name] = tower_summary(path)
        except EdgeclipError as exc:
            out[name] = {"nnapi": None, "xnnpack": None, "error": str(exc)}
    return out


def _write(out_dir: Path, manifest: dict, files: dict) -> Path:
    from edgeclip.bundle.write import write_bundle

    return write_bundle(out_dir, manifest, files)
