"""Real photographs and odd image files (the ones scikit-image and matplotlib ship: grayscale, RGBA, palette,
16-bit, multi-page TIFF, GIF, JPEG) go through the index: each is embedded or listed with its error."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edgeclip.index import PhotoIndex, image_extensions


def shipped_images() -> list[Path]:
    skimage = pytest.importorskip("skimage", reason="the sample photographs come with scikit-image (dev extra)")
    folders = [Path(skimage.__file__).parent / "data"]
    try:
        import matplotlib

        folders.append(Path(matplotlib.get_data_path()) / "sample_data")
    except ImportError:
        pass
    exts = image_extensions()
    return sorted(p for folder in folders for p in folder.iterdir() if p.suffix.lower() in exts)


def test_shipped_photographs_are_indexed(tmp_path, demo_encoder):
    files = shipped_images()
    root = tmp_path / "photos"
    for i, path in enumerate(files):
        (root / f"set{i % 3}").mkdir(parents=True, exist_ok=True)
        shutil.copy(path, root / f"set{i % 3}" / path.name)
    (root / "notes.txt").write_text("not an image, not scanned")
    with PhotoIndex(tmp_path / "photos.db", demo_encoder) as index:
        report = index.update([root])
        assert report.scanned == len(files)
        embedded = {Path(p).name for p in report.added}
        failed = {Path(p).name: e for p, e in report.failed}
        assert embedded | set(failed) == {p.name for p in files} and not embedded & set(failed)
        assert len(embedded) >= 0.9 * len(files), f"failed: {failed}"
        assert {"camera.png", "logo.png", "multipage.tif", "retina.jpg", "no_time_for_that_tiny.gif"} <= embedded
        assert "not a recognised image format" in failed["multipage_rgb.tif"]  # Pillow cannot open this one
        assert index.search(image=root / "set0" / files[0].name, top_k=1)[0].path.endswith(files[0].name)
