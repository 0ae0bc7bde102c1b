"""Accuracy and speed guards: find the fewest float-kept nodes that meet the fidelity target.

1. Quantize every candidate node; if the search set meets the target, done.
2. Otherwise measure each node's damage alone (centered-embedding SQNR with only that node in int8),
   then keep the most damaging nodes in float, growing their number (doubling, then bisection)
   until the target is met. Every recipe tried becomes a point of the trade-off curve.
3. Speed guard: the chosen recipe's latency is measured against fp32 in the same run; a tower
   that would be slower than ``min_speedup`` stays fp32.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from onnxruntime.quantization.calibrate import TensorsData
from tqdm import tqdm

from quantize.measure import embed, fidelity, latency_ratio
from quantize.session import make_session
from quantize.recipes import Target, quantize_nodes
from quantize.weight_storage import fp16_weights


@dataclass(frozen=True)
class Goals:
    """Fidelity the search must reach (on held-out search inputs) and the speed a tower must keep."""

    min_cos: float = 0.995
    min_centered: float = 0.90
    min_speedup: float = 1.0

    def met(self, metrics: dict) -> bool:
        return metrics["mean_cos"] >= self.min_cos and metrics["centered_mean_cos"] >= self.min_centered


@dataclass
class RecipePoint:
    """One recipe tried: which candidates stayed float, its fidelity and (if measured) speed."""

    label: str
    kept_float: list[str]
    quantized: int
    metrics: dict
    latency: dict | None = None
    fp16_weights: list[dict] = field(default_factory=list)  # kept-float weights stored fp16

    def as_dict(self) -> dict:
        return {"label": self.label, "kept_float": list(self.kept_float), "quantized_nodes": self.quantized,
                "metrics": self.metrics, "latency": self.latency, "fp16_weights": self.fp16_weights}


@dataclass
class TowerResult:
    """Outcome for one tower: int8 (with the chosen recipe) or fp32 (with the reason)."""

    precision: str
    reason: str
    candidates: list[str]
    chosen: RecipePoint | None = None
    curve: list[RecipePoint] = field(default_factory=list)
    sensitivity: list[tuple[str, float]] = field(default_factory=list)
    model_path: Path | None = None

    def as_dict(self) -> dict:
        return {"precision": self.precision, "reason": self.reason, "candidates": len(self.candidates),
                "chosen": self.chosen.as_dict() if self.chosen else None,
                "curve": [p.as_dict() for p in self.curve],
                "sensitivity_sqnr_db": [{"node": n, "sqnr_db": s} for n, s in self.sensitivity]}


class TowerSearch:
    """Quantize one fp32 tower under ``target`` with precomputed ranges, guided by a search set.

    ``fp32_path`` is the reference every recipe is measured against; ``base_path`` (default: the same graph)
    is the one quantized, e.g. with its token table already stored compactly (``quantize.token_table``).
    """

    def __init__(self, fp32_path: Path, work: Path, ranges: TensorsData, target: Target, candidates: list[str],
                 search_feeds: list[dict], speed_feed: dict, goals: Goals, measure_speed_guard: bool = True,
                 progress: bool = True, name: str = "tower", base_path: Path | None = None):
        self.fp32_path, self.work, self.ranges, self.target = fp32_path, work, ranges, target
        self.base_path = base_path or fp32_path
        self.candidates, self.search_feeds, self.speed_feed, self.goals = candidates, search_feeds, speed_feed, goals
        self.guard_speed, self.progress, self.name = measure_speed_guard, progress, name
        self.reference = embed(make_session(fp32_path), search_feeds)
        self._n = 0

    def _build(self, kept: set[str]) -> tuple[Path, list[dict]]:
        """The recipe keeping ``kept`` float; on targets that ask for it their weights are stored fp16."""
        self._n += 1
        path = self.work / f"{self.name}-{self._n:03d}.onnx"
        quantize_nodes(self.base_path, path, self.ranges, [c for c in self.candidates if c not in kept], self.target)
        if not (self.target.fp16_kept_float and kept):
            return path, []
        model, records = fp16_weights(onnx.load(str(path)), kept)
        onnx.save(model, str(path))
        return path, records

    def _evaluate(self, label: str, kept: list[str], speed: bool = True) -> tuple[RecipePoint, Path]:
        path, stored = self._build(set(kept))
        metrics = fidelity(self.reference, embed(make_session(path), self.search_feeds))
        latency = latency_ratio(self.fp32_path, path, self.speed_feed) if speed else None
        return RecipePoint(label, list(kept), len(self.candidates) - len(kept), metrics, latency, stored), path

    def node_sensitivity(self) -> list[tuple[str, float]]:
        """(node, centered SQNR dB with only that node quantized), most damaging first."""
        out = []
        for node in tqdm(self.candidates, desc=f"{self.name}: per-node sensitivity", disable=not self.progress,
                         unit="node"):
            path = self.work / f"{self.name}-single.onnx"
            quantize_nodes(self.base_path, path, self.ranges, [node], self.target)
            out.append((node, fidelity(self.reference, embed(make_session(path), self.search_feeds))["centered_sqnr_db"]))
            os.unlink(path)
        return sorted(out, key=lambda t: t[1])

    def run(self) -> TowerResult:
        result = TowerResult("fp32", "", self.candidates)
        if not self.candidates:
            result.reason = f"no node of this tower is a {self.target.name} int8 candidate"
            return result
        point, path = self._evaluate("all candidates int8", [])
        result.curve.append(point)
        best = (point, path) if self.goals.met(point.metrics) else None
        if best is None:
            result.sensitivity = self.node_sensitivity()
            order = [n for n, _ in result.sensitivity]
            best = self._grow_float_set(order, result)
        if best is None:
            result.reason = "no int8 recipe met the fidelity goals before every candidate was float"
            return result
        point, path = best
        return self._speed_guard(result, point, path)

    def _grow_float_set(self, order: list[str], result: TowerResult):
        """Smallest k such that keeping order[:k] float meets the goals (doubling, then bisection)."""
        tried: dict[int, tuple[RecipePoint, Path]] = {}

        def attempt(k: int):
            if k not in tried:
                tried[k] = self._evaluate(f"{k} most sensitive kept float", order[:k])
                result.curve.append(tried[k][0])
            return tried[k]

        lo, k = 0, 1
        with tqdm(desc=f"{self.name}: float-set search", disable=not self.progress, unit="recipe") as bar:
            while k < len(order):
                bar.update()
                if self.goals.met(attempt(k)[0].metrics):
                    break
                lo, k = k, min(2 * k, len(order))
            else:
                return None
            hi = k
            while hi - lo > 1:
                bar.update()
                mid = (lo + hi) // 2
                if self.goals.met(attempt(mid)[0].metrics):
                    hi = mid
                else:
                    lo = mid
        return tried[hi]

    def _speed_guard(self, result: TowerResult, point: RecipePoint, path: Path) -> TowerResult:
        result.chosen = point
        speed = point.latency["speedup"]
        if self.guard_speed and speed < self.goals.min_speedup:
            result.reason = (f"the int8 recipe meeting the fidelity goals ran {speed:.2f}x fp32 speed "
                             f"(< {self.goals.min_speedup:.2f}x): kept fp32")
            return result
        result.precision, result.model_path = "int8", path
        result.reason = f"{point.label}: {point.quantized}/{len(self.candidates)} candidates int8"
        return result
