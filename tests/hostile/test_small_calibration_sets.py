"""Small calibration sets: the held-out evaluation split adapts (at most a quarter), and says so; the
"no usable calibration sample" error is kept for a source where nothing decodes."""
from __future__ import annotations

import pytest

from quantize.data import SamplePass, plan_sources
from quantize.errors import QuantizeError
from quantize.shards import write_shards

from tests.quantize.quantize_fixtures import SPEC, make_samples


def _pass(tmp_path, n, samples=500, eval_samples=64):
    folder = tmp_path / f"set{n}"
    write_shards(make_samples(n, seed=4), folder, samples_per_shard=64)
    sample_pass = SamplePass(plan_sources([folder], None, samples, eval_samples), SPEC)
    return sample_pass, sum(1 for _ in sample_pass.image_views())


@pytest.mark.parametrize("n", [3, 10, 40, 65])
def test_fewer_samples_than_asked_still_calibrate(tmp_path, n):
    sample_pass, views = _pass(tmp_path, n)
    held = sample_pass.eval.count
    assert held == max(2, n // 4) and sample_pass.calibration_images == n - held and views >= n - held
    assert len(sample_pass.eval.images) == held
    assert sample_pass.split_note and f"only {n} usable samples" in sample_pass.split_note


def test_enough_samples_keep_the_asked_split(tmp_path):
    sample_pass, _ = _pass(tmp_path, 20, samples=8, eval_samples=4)
    assert sample_pass.eval.count == 4 and sample_pass.calibration_images == 8 and sample_pass.split_note is None


@pytest.mark.parametrize("n", [1, 2])
def test_too_few_samples_say_how_many_are_needed(tmp_path, n):
    with pytest.raises(QuantizeError, match=f"only {n} usable samples .*evaluation needs 2 and calibration at least 1"):
        _pass(tmp_path, n)


def test_no_usable_sample_is_said_only_when_nothing_decodes(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "a.tar").write_bytes(b"not a tar")
    with pytest.raises(QuantizeError, match="no usable calibration sample"):
        list(SamplePass(plan_sources([folder], None, 500, 64), SPEC).image_views())


def test_the_quantizer_report_says_the_split_shrank(tmp_path):
    """quantize.int8 on 12 usable samples (asked: 500 and 64) writes an INT8 bundle whose report says why 3 evaluate."""
    import json

    from quantize.quantizer import quantize_bundle
    from tests.quantize.quantize_fixtures import write_tiny_bundle

    fp32 = write_tiny_bundle(tmp_path / "fp32")
    write_shards(make_samples(12, seed=6), tmp_path / "small")
    out = quantize_bundle(fp32, tmp_path / "int8", calibration=[tmp_path / "small"], search_samples=2, captions=64,
                          progress=False)
    report = json.loads((out / "report.json").read_text())
    assert report["eval"]["images"] == 3 and report["calibration"]["images"] == 9
    assert "only 12 usable samples: 3 held out for evaluation" in report["eval"]["split_note"]
    assert report["eval"]["split_note"] in (out / "report.md").read_text()
