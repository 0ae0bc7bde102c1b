"""Tensor-range calibration (MinMax, MovingAverage MinMax, Percentile, Entropy) in bounded memory.

Batches stream through ORT's calibration graph: MinMax keeps only running per-tensor minima and
maxima; the histogram methods feed ORT's collector in small chunks, so 1,000 images never sit in
memory at once. Entropy gets its bin count passed through for real (ORT's defaults of 128 bins and
128 quantized bins leave one candidate threshold, which silently equals MinMax).
"""

from __future__ import annotations

import itertools
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod
from onnxruntime.quantization.calibrate import TensorsData, create_calibrator

from quantize.errors import QuantizeError

METHODS = ("minmax", "percentile", "entropy")


@dataclass(frozen=True)
class CalibrationConfig:
    """How tensor ranges are estimated; ``num_bins`` is the histogram size of Percentile/Entropy."""

    method: str = "minmax"
    moving_average: bool = True
    num_bins: int = 2048
    num_quantized_bins: int = 128
    percentile: float = 99.999
    symmetric: bool = False
    chunk: int = 8  # batches per histogram update (bounds memory of the histogram methods)
    # MinMax moving average: the mean of the extremes of consecutive groups of this many samples, whatever
    # the graph's batch (per-sample extremes of a batch-1 graph would average to ranges that clip most inputs)
    group: int = 8

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise QuantizeError(f"calibration method {self.method!r} is not one of {METHODS}")
        if self.group < 1:
            raise QuantizeError(f"calibration group must be at least 1 sample, got {self.group}")
        if self.method == "entropy" and self.num_bins <= self.num_quantized_bins:
            raise QuantizeError(f"entropy calibration needs num_bins ({self.num_bins}) > num_quantized_bins "
                                f"({self.num_quantized_bins}); otherwise it has one candidate and equals MinMax")

    @property
    def ort_method(self) -> CalibrationMethod:
        return {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                "entropy": CalibrationMethod.Entropy}[self.method]

    def describe(self) -> str:
        if self.method == "minmax":
            return "MinMax (moving average)" if self.moving_average else "MinMax"
        if self.method == "percentile":
            return f"Percentile {self.percentile} ({self.num_bins} bins)"
        return f"Entropy ({self.num_bins} bins, {self.num_quantized_bins} quantized bins)"


class FeedReader(CalibrationDataReader):
    """ORT CalibrationDataReader over an iterator of input feeds ({input name: array})."""

    def __init__(self, feeds: Iterable[dict[str, np.ndarray]]):
        self._it = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def calibrate(model_path: str | os.PathLike, feeds: Iterable[dict[str, np.ndarray]], config: CalibrationConfig,
              op_types: list[str] | None = None) -> TensorsData:
    """Stream ``feeds`` through ``model_path`` and return per-tensor ranges for ``op_types``' tensors."""
    with tempfile.TemporaryDirectory(prefix="edgeclip-calib-") as tmp:
        extra = {"symmetric": config.symmetric}
        if config.method == "entropy":
            extra.update(num_bins=config.num_bins, num_quantized_bins=config.num_quantized_bins)
        elif config.method == "percentile":
            extra.update(num_bins=config.num_bins, percentile=config.percentile)
        calibrator = create_calibrator(
            Path(model_path), op_types, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=config.ort_method, providers=["CPUExecutionProvider"], extra_options=extra)
        try:
            if config.method == "minmax":
                return _stream_minmax(calibrator, feeds, config.moving_average, config.symmetric, config.group)
            it = iter(feeds)
            seen = False
            while True:
                chunk = list(itertools.islice(it, config.chunk))
                if not chunk:
                    break
                seen = True
                calibrator.collect_data(FeedReader(chunk))
            if not seen:
                raise QuantizeError("no calibration data: the calibration source produced no batch")
            return calibrator.compute_data()
        finally:
            del calibrator


def _stream_minmax(calibrator, feeds: Iterable[dict[str, np.ndarray]], moving_average: bool,
                   symmetric: bool, group: int = 8) -> TensorsData:
    """Run ORT's ReduceMin/ReduceMax-augmented graph batch by batch, keeping only running statistics.

    The moving average is taken over groups of at least ``group`` samples (whole batches), so a batch-1 graph
    gets the ranges a batch-8 graph gets from the same samples."""
    session = calibrator.infer_session
    names = [o.name for o in session.get_outputs()][calibrator.num_model_outputs:]
    tensors = [names[k].rpartition("_")[0] for k in range(0, len(names), 2)]
    lo = hi = None  # sums of group extremes (moving average) or the extremes so far
    g_lo = g_hi = None  # extremes of the group being filled
    in_group = count = 0
    for feed in feeds:
        values = session.run(names, feed)
        mins = np.array([np.min(v) for v in values[0::2]], dtype=np.float64)
        maxs = np.array([np.max(v) for v in values[1::2]], dtype=np.float64)
        g_lo, g_hi = (mins, maxs) if g_lo is None else (np.minimum(g_lo, mins), np.maximum(g_hi, maxs))
        in_group += len(next(iter(feed.values())))
        if in_group >= group or not moving_average:
            lo, hi = _fold(lo, hi, g_lo, g_hi, moving_average)
            g_lo = g_hi = None
            in_group, count = 0, count + 1
    if g_lo is not None:  # a last, short group counts like ORT's last short batch
        lo, hi = _fold(lo, hi, g_lo, g_hi, moving_average)
        count += 1
    if lo is None:
        raise QuantizeError("no calibration data: the calibration source produced no batch")
    if moving_average:  # the mean of per-group extremes, as ORT's CalibMovingAverage over batches of `group`
        lo, hi = lo / count, hi / count
    ranges = {}
    for name, a, b in zip(tensors, lo, hi):
        if symmetric:
            m = max(abs(a), abs(b))
            a, b = -m, m
        ranges[name] = (np.array(a, dtype=np.float32), np.array(b, dtype=np.float32))
    return TensorsData(CalibrationMethod.MinMax, ranges)


def _fold(lo, hi, mins: np.ndarray, maxs: np.ndarray, moving_average: bool):
    """Add one group's extremes to the running sums (moving average) or extremes (plain MinMax)."""
    if lo is None:
        return mins, maxs
    if moving_average:
        return lo + mins, hi + maxs
    return np.minimum(lo, mins), np.maximum(hi, maxs)


def batched(items: Iterable[np.ndarray], batch: int, input_name: str, fixed: bool = False
            ) -> Iterator[dict[str, np.ndarray]]:
    """Group single inputs into ``{input_name: stacked batch}`` feeds; with a fixed-batch graph a
    short last group is padded by repeating its last item (padding only repeats seen values)."""
    it = iter(items)
    while True:
        group = list(itertools.islice(it, batch))
        if not group:
            return
        if fixed and len(group) < batch:
            group += [group[-1]] * (batch - len(group))
        yield {input_name: np.stack(group)}
