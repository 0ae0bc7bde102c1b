"""Split reinforced samples into a held-out evaluation set and a streaming calibration set.

Evaluation samples never reach calibration or the float-node search. Calibration images stream
(their stored augmented views, preprocessed like on the device) straight into the calibrator;
only captions (small) and a few search inputs are kept in memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from quantize.augment import AugmentError, augmented_view, sample_views
from quantize.errors import QuantizeError
from quantize.teacher import pth_loader
from edgeclip.shards import DecodedSample, ReadStats, iter_samples


@dataclass
class HeldOutSet:
    """Held-out inputs: one image view and one paired caption per sample, all captions, teacher rows."""

    images: list[np.ndarray] = field(default_factory=list)
    pair_captions: list[str] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    teacher_image: list[np.ndarray | None] = field(default_factory=list)
    teacher_text: list[np.ndarray | None] = field(default_factory=list)
    count: int = 0  # held-out samples taken (an image-only bundle's samples need no caption)

    @property
    def has_teacher(self) -> bool:
        return bool(self.teacher_image) and all(t is not None for t in self.teacher_image + self.teacher_text)


@dataclass
class CalibrationPlan:
    """Where calibration and evaluation samples come from, and how many of each."""

    calibration: list[Path]
    evaluation: list[Path] | None  # None: hold out the first ``eval_samples`` calibration samples
    samples: int = 500
    eval_samples: int = 64
    views: int = 1
    rand_augment: bool = False
    source: str = ""


def plan_sources(paths: Sequence[str | os.PathLike], eval_paths: Sequence[str | os.PathLike] | None,
                 samples: int, eval_samples: int, views: int = 1, rand_augment: bool = False) -> CalibrationPlan:
    """Resolve user paths; a dataset root with calib/ and eval/ folders uses them as the two splits."""
    calibration = [Path(p) for p in paths]
    evaluation = [Path(p) for p in eval_paths] if eval_paths else None
    if len(calibration) == 1 and evaluation is None and (calibration[0] / "calib").is_dir() \
            and (calibration[0] / "eval").is_dir():
        root = calibration[0]
        calibration, evaluation = [root / "calib"], [root / "eval"]
    if samples < 1 or eval_samples < 2 or views < 1:
        raise QuantizeError("need samples >= 1, eval_samples >= 2 and views >= 1")
    return CalibrationPlan(calibration, evaluation, samples, eval_samples, views, rand_augment,
                           source=", ".join(str(p) for p in paths))


def _eval_entry(sample: DecodedSample, spec: dict, out: HeldOutSet, text: bool = True) -> None:
    """Add one held-out sample: its first stored view (the teacher's crop) or the plain preprocessing."""
    from edgeclip.preprocess import preprocess_image

    caps = sample.captions
    if not caps and text:
        raise AugmentError(f"evaluation sample {sample.key} has no caption")
    if spec is not None:  # None: text-only bundle
        out.images.append(augmented_view(sample.image, sample.param_aug[0], spec) if sample.param_aug
                          else preprocess_image(sample.image, spec))
    out.pair_captions.extend(caps[:1])
    out.captions.extend(caps)
    out.count += 1
    has = sample.image_emb is not None and sample.text_emb is not None and bool(sample.caption)
    out.teacher_image.append(sample.image_emb[0] if has else None)
    out.teacher_text.append(sample.text_emb[0] if has else None)


class SamplePass:
    """One pass over the samples: fills the eval set, collects captions, streams calibration views."""

    def __init__(self, plan: CalibrationPlan, spec: dict | None, search_images: int = 16, text: bool = True):
        self.plan, self.spec, self.search_images, self.text = plan, spec, search_images, text
        self.stats = ReadStats()
        self.eval = HeldOutSet()
        self.captions: list[str] = []
        self.search: list[np.ndarray] = []
        self.calibration_images = 0
        self.split_note: str | None = None  # set when a small set made the evaluation split smaller

    def _add_eval(self, sample: DecodedSample) -> bool:
        try:
            _eval_entry(sample, self.spec, self.eval, self.text)
            return True
        except (AugmentError, ValueError) as exc:
            self.stats.skip(f"bad eval sample: {exc.__class__.__name__}")
            return False

    def _load_eval(self) -> None:
        for sample in iter_samples(self.plan.evaluation, self.stats, pth_loader=pth_loader()):
            if self.eval.count >= self.plan.eval_samples:
                break
            self._add_eval(sample)

    def _calibrate(self, sample: DecodedSample, on_sample: Callable[[], None] | None) -> Iterator[np.ndarray]:
        """Yield one sample's calibration views; returns whether the sample counted."""
        self.captions.extend(sample.captions)
        if self.spec is not None:
            try:
                views = sample_views(sample, self.spec, self.plan.views, self.plan.rand_augment)
            except (AugmentError, ValueError) as exc:
                self.stats.skip(f"bad augmentation: {exc.__class__.__name__}")
                return False
            for v in views:
                if len(self.search) < self.search_images:
                    self.search.append(v)
                yield v
        self.calibration_images += 1
        if on_sample:
            on_sample()
        return True

    def image_views(self, on_sample: Callable[[], None] | None = None) -> Iterator[np.ndarray]:
        """Yield calibration views (and fill eval/captions on the way); run it to the end once.

        Held out from the calibration source, the evaluation split is the first ``eval_samples`` usable samples;
        when the source runs out before ``samples`` calibration samples, it shrinks to a quarter of all usable
        samples (at least 2), the rest calibrate, and ``split_note`` says so.
        """
        if self.plan.evaluation is not None:
            self._load_eval()
        held: list[DecodedSample] | None = [] if self.plan.evaluation is None else None
        for sample in iter_samples(self.plan.calibration, self.stats, pth_loader=pth_loader()):
            if held is not None and self.eval.count < self.plan.eval_samples:
                if self._add_eval(sample):
                    held.append(sample)
                continue
            if self.calibration_images >= self.plan.samples:
                break
            yield from self._calibrate(sample, on_sample)
            if held and self.calibration_images >= 3 * len(held):
                held.clear()  # a quarter or less already: the split stays, the held samples need not stay in memory
        if held and self.calibration_images < self.plan.samples:
            yield from self._shrink_split(held, on_sample)
        taken = self.calibration_images
        if held is not None and taken + self.eval.count in (1, 2):
            raise QuantizeError(f"only {taken + self.eval.count} usable samples in {self.plan.source}; evaluation "
                                f"needs 2 and calibration at least 1 (add samples, or give --eval separately)")
        if self.eval.count < 2 and taken + self.eval.count:
            raise QuantizeError(f"only {self.eval.count} usable evaluation samples in "
                                f"{self.plan.evaluation or self.plan.calibration}; need at least 2")
        if taken == 0:
            raise QuantizeError(f"no usable calibration sample in {self.plan.source} "
                                f"(skipped: {dict(self.stats.reasons)})")

    def _shrink_split(self, held: list[DecodedSample], on_sample: Callable[[], None] | None) -> Iterator[np.ndarray]:
        """Keep a quarter of all usable samples (at least 2) for evaluation and calibrate on the rest of `held`."""
        total = len(held) + self.calibration_images
        keep = max(2, total // 4)
        if keep >= len(held):
            return
        self.eval = type(self.eval)()
        for sample in held[:keep]:
            self._add_eval(sample)
        for sample in held[keep:]:
            if self.calibration_images >= self.plan.samples:
                break
            yield from self._calibrate(sample, on_sample)
        self.split_note = (f"only {total} usable samples: {self.eval.count} held out for evaluation (at most a "
                           f"quarter, instead of {self.plan.eval_samples}), {self.calibration_images} calibrate")

    def drain(self) -> None:
        """Run the pass without an image consumer (text-only bundles)."""
        for _ in self.image_views():
            pass
