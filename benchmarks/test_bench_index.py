"""`edgeclip index` on 2,000 generated JPEGs of mixed sizes (64 to 2400 px a side, 20 broken), timed as a user runs it (marker `bench`):
a first run, a second run that must embed nothing in at most 5 % of the first's time, then 100 changed,
100 added and 100 deleted files that must be exactly the ones handled.

Run: `python -m pytest -m bench benchmarks/test_bench_index.py -s` (EDGECLIP_BENCH_PHOTOS sets the count,
EDGECLIP_BENCH_INDEX_MODELS=s0,demo the models; bundles are built once into $EDGECLIP_HOME/bench).
Prints the wall times and images/s of each run.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.search.photo_trees import make_tree, mixed_size_image, rewrite

pytestmark = pytest.mark.bench

PHOTOS = int(os.environ.get("EDGECLIP_BENCH_PHOTOS", "2000"))
MAX_SIDE = 2400  # sides 64..2400 px: thumbnails to 5-megapixel pictures
# s0: MobileCLIP-S0's architecture (random weights: the speed of the real model); demo: the tiny trained model
MODELS = os.environ.get("EDGECLIP_BENCH_INDEX_MODELS", "s0").split(",")
BROKEN = max(1, PHOTOS // 100)


def run_index(bundle, root, db) -> tuple[dict, float]:
    """One `edgeclip --json index` process: (its summary, wall seconds including start-up)."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "edgeclip", "--json", "index", str(bundle), str(root), "--db", str(db)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)["update"], time.perf_counter() - start


@pytest.mark.parametrize("model", MODELS)
def test_bench_index_incremental(tmp_path, model):
    from benchmarks.reference import build_bundle

    bundle = build_bundle(model, "fp32")
    root = tmp_path / "photos"
    good, broken = make_tree(root, PHOTOS - BROKEN, BROKEN, seed=0, folders=20, max_side=MAX_SIDE)
    db = tmp_path / "photos.db"

    first, first_s = run_index(bundle, root, db)
    assert len(first["added"]) == len(good) and len(first["failed"]) == len(broken)
    second, second_s = run_index(bundle, root, db)
    assert second["embedded"] == 0 and second["unchanged"] == len(good) and second["still_broken"] == len(broken)

    rng = np.random.default_rng(1)
    changed, deleted = good[:100], good[100:200]
    for path in changed:
        rewrite(path, rng, MAX_SIDE)
    for path in deleted:
        path.unlink()
    added = [root / "new" / f"new{i:03d}.jpg" for i in range(100)]
    added[0].parent.mkdir()
    for path in added:
        mixed_size_image(rng, MAX_SIDE).save(path, quality=88)
    third, third_s = run_index(bundle, root, db)
    assert sorted(third["changed"]) == sorted(map(str, changed))
    assert sorted(third["added"]) == sorted(map(str, added))
    assert third["deleted"] == sorted(map(str, deleted))
    assert third["embedded"] == 200 and not third["failed"]

    rows = [("first", first, first_s), ("second (unchanged)", second, second_s), ("third (300 changes)", third, third_s)]
    megabytes = sum(p.stat().st_size for p in root.rglob("*.jpg")) / 1e6
    print(f"\n{model} fp32, {PHOTOS} JPEGs ({BROKEN} broken, {megabytes:.0f} MB), load average {os.getloadavg()[0]:.1f}")
    for name, summary, wall in rows:
        print(f"  {name}: wall {wall:.2f} s (process start included), indexing {summary['seconds']:.2f} s, "
              f"{summary['embedded']} embedded, {summary['images_per_second']:.1f} images/s")
    print(f"  second / first wall time: {second_s / first_s:.3f}")
    assert second_s <= 0.05 * first_s
