"""The benchmark's cold-start rows per set of towers (runtime.bench_device.tower_probe_rows), in fresh processes on a
tiny bundle: image-only and text-only Encoders open their tower at construction, "both" is the default Encoder
timed to its first image and then to its first text, and the report renders every device-path table."""
from __future__ import annotations

import shutil

from PIL import Image

from runtime.bench import machine_info
from runtime.bench_device import tower_probe_rows
from runtime.bench_report import render_markdown
from runtime.bench_runners import bundle_runners


def test_cold_start_rows_say_what_each_set_of_towers_waited_for(bundles, tmp_path):
    jpeg = tmp_path / "photo.jpg"
    Image.effect_mandelbrot((160, 120), (-2, -1.2, 1, 1.2), 60).convert("RGB").save(jpeg)
    runners = bundle_runners(bundles["dynamic"], ["CPUExecutionProvider"], 1)
    rows = {r["towers"]: r for r in tower_probe_rows(runners, 1, jpeg, repeats=1)}
    assert set(rows) == {"image", "text", "both"} and all(r["status"] == "ok" for r in rows.values())
    image, text, both = rows["image"], rows["text"], rows["both"]
    assert "first_text_s" not in image and "first_image_s" not in text
    assert image["cold_start_s"] == image["import_s"] + image["session_s"] + image["first_image_s"]
    assert text["cold_start_s"] == text["import_s"] + text["session_s"] + text["first_text_s"]
    # the default Encoder: its first embedding is the image; the text tower and tokenizer open after it
    assert both["cold_start_s"] == both["import_s"] + both["session_s"] + both["first_image_s"]
    assert both["cold_start_image_and_text_s"] == both["cold_start_s"] + both["first_text_s"]
    assert both["peak_rss_mb"] >= both["peak_rss_first_image_mb"] > 0
    assert 0 < both["process_to_first_embedding_s"]
    md = render_markdown({"rows": list(rows.values()), "ratios": [], "machine": machine_info(), "config": {},
                          "created_utc": "now"})
    assert "## Cold start and peak RSS per set of towers" in md and "both, opened on first use" in md


def test_two_bundles_with_one_label_are_told_apart_in_the_report(bundles, tmp_path):
    jpeg = tmp_path / "photo.jpg"
    Image.effect_mandelbrot((160, 120), (-2, -1.2, 1, 1.2), 60).convert("RGB").save(jpeg)
    copy = shutil.copytree(bundles["dynamic"], tmp_path / "copy")
    runners = [r for b in (bundles["dynamic"], copy) for r in bundle_runners(b, ["CPUExecutionProvider"], 1)]
    assert runners[0].label == runners[1].label
    rows = tower_probe_rows(runners, 1, jpeg, repeats=1)
    md = render_markdown({"rows": rows, "ratios": [], "machine": machine_info(), "config": {}, "created_utc": "now"})
    assert f"{runners[0].label} (dynamic)" in md and f"{runners[0].label} (copy)" in md
