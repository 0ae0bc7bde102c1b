"""Calibration methods on a real tower: streaming MinMax matches ORT, Entropy really differs from MinMax."""

from __future__ import annotations

import numpy as np
import pytest
from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator
from quantize_fixtures import make_image_tower

from quantize.calibration import CalibrationConfig, FeedReader, batched, calibrate
from quantize.errors import QuantizeError

OPS = ["Conv", "MatMul"]


@pytest.fixture(scope="module")
def tower(tmp_path_factory):
    return make_image_tower(tmp_path_factory.mktemp("cal") / "image.onnx")


def _feeds(n=24, seed=0):
    rng = np.random.default_rng(seed)
    # heavy-tailed inputs, so that a histogram method has outliers to clip
    return [{"image": (rng.standard_t(2, (2, 3, 32, 32)) * 0.3).astype(np.float32)} for _ in range(n)]


def _ranges(td):
    return {k: (float(np.ravel(v.range_value[0])[0]), float(np.ravel(v.range_value[1])[0])) for k, v in td.items()}


def test_streaming_minmax_equals_ort_minmax(tower, tmp_path):
    ours = _ranges(calibrate(tower, _feeds(), CalibrationConfig(moving_average=False), OPS))
    ref = create_calibrator(tower, OPS, augmented_model_path=str(tmp_path / "aug.onnx"),
                            calibrate_method=CalibrationMethod.MinMax)
    ref.collect_data(FeedReader(_feeds()))
    theirs = _ranges(ref.compute_data())
    assert ours.keys() == theirs.keys() and len(ours) >= 6
    for k in ours:
        np.testing.assert_allclose(ours[k], theirs[k], rtol=1e-6, atol=1e-7)


def test_moving_average_is_the_mean_of_batch_extremes(tower):
    plain = _ranges(calibrate(tower, _feeds(), CalibrationConfig(moving_average=False), OPS))
    moving = _ranges(calibrate(tower, _feeds(), CalibrationConfig(moving_average=True), OPS))
    inner = [k for k in plain if moving[k][1] < plain[k][1] - 1e-6]
    assert inner, "the mean of per-batch maxima must sit inside the global range for heavy-tailed data"
    assert all(moving[k][0] >= plain[k][0] - 1e-6 and moving[k][1] <= plain[k][1] + 1e-6 for k in plain)



def test_moving_average_does_not_depend_on_the_graphs_batch(tmp_path):
    """A batch-1 graph (the xnnpack/nnapi targets) gets the ranges a batch-8 graph gets from the same samples,
    not the mean of per-sample extremes, which clips most inputs."""
    one, eight = make_image_tower(tmp_path / "b1.onnx", batch=1), make_image_tower(tmp_path / "b8.onnx", batch=8)
    samples = [x for f in _feeds(n=12, seed=1) for x in f["image"]]  # 24 samples: 3 groups of 8
    r1 = _ranges(calibrate(one, batched(samples, 1, "image", fixed=True), CalibrationConfig(), OPS))
    r8 = _ranges(calibrate(eight, batched(samples, 8, "image", fixed=True), CalibrationConfig(), OPS))
    per_sample = _ranges(calibrate(one, batched(samples, 1, "image", fixed=True), CalibrationConfig(group=1), OPS))
    assert r1.keys() == r8.keys() and len(r1) >= 6
    for k in r1:
        np.testing.assert_allclose(r1[k], r8[k], rtol=1e-6, atol=1e-7)
    assert any(per_sample[k][1] < r1[k][1] - 1e-6 for k in r1), "per-sample extremes average to narrower ranges"

def test_entropy_with_real_bins_differs_from_minmax(tower):
    minmax = _ranges(calibrate(tower, _feeds(), CalibrationConfig(moving_average=False), OPS))
    entropy = _ranges(calibrate(tower, _feeds(), CalibrationConfig(method="entropy", num_bins=512), OPS))
    assert minmax.keys() == entropy.keys()
    differ = [k for k in minmax if not np.allclose(minmax[k], entropy[k], rtol=1e-3)]
    assert len(differ) >= len(minmax) // 2, "entropy thresholds must clip outliers MinMax keeps"
    # clipped ranges lie inside the observed range
    assert all(entropy[k][1] <= minmax[k][1] + 1e-5 and entropy[k][0] >= minmax[k][0] - 1e-5 for k in minmax)


def test_entropy_refuses_the_bin_count_that_degenerates_to_minmax():
    with pytest.raises(QuantizeError, match="equals MinMax"):
        CalibrationConfig(method="entropy", num_bins=128, num_quantized_bins=128)


def test_percentile_clips_and_unknown_method_is_refused(tower):
    minmax = _ranges(calibrate(tower, _feeds(), CalibrationConfig(moving_average=False), OPS))
    pct = _ranges(calibrate(tower, _feeds(), CalibrationConfig(method="percentile", percentile=99.0), OPS))
    assert any(pct[k][1] < minmax[k][1] * 0.99 for k in minmax)
    with pytest.raises(QuantizeError, match="not one of"):
        CalibrationConfig(method="kl")


def test_empty_calibration_source_is_a_clear_error(tower):
    with pytest.raises(QuantizeError, match="no calibration data"):
        calibrate(tower, [], CalibrationConfig(), OPS)


def test_fixed_batch_pads_the_last_group_with_seen_items():
    items = [np.full((2,), k, np.float32) for k in range(5)]
    feeds = list(batched(items, 2, "x", fixed=True))
    assert [f["x"].shape for f in feeds] == [(2, 2)] * 3 and feeds[-1]["x"][1, 0] == 4
    assert list(batched(items, 2, "x"))[-1]["x"].shape == (1, 2)
