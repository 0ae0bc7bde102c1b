"""Photo folders the search tests make: the demo's coloured shapes (quantize.synthetic's renderer) saved as JPEGs
of mixed sizes, plus broken files of the kinds a real camera folder holds (truncated, empty, not an image)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from quantize.synthetic import BACKGROUNDS, COLOURS, POSITIONS, SHAPES, SIZES, Scene, SceneObject, render

CLASSES = [(c, s) for c in COLOURS for s in SHAPES]  # the 48 colour-shape classes


def shape_image(colour: str, shape: str, rng: np.random.Generator, side: Optional[int] = None) -> Image.Image:
    """One `colour` `shape` on a random background, at a random size and position; scaled to `side` px."""
    obj = SceneObject(colour, shape, str(rng.choice(list(SIZES))), str(rng.choice(list(POSITIONS))))
    im, _ = render(Scene((obj,), str(rng.choice(BACKGROUNDS))), rng)
    return im.resize((side, side), Image.Resampling.BILINEAR) if side else im


def mixed_size_image(rng: np.random.Generator, max_side: int = 640) -> Image.Image:
    """A random class at a random size and aspect ratio (64..max_side px per side)."""
    colour, shape = CLASSES[int(rng.integers(len(CLASSES)))]
    im = shape_image(colour, shape, rng)
    w, h = (int(v) for v in rng.integers(64, max_side + 1, size=2))
    return im.resize((w, h), Image.Resampling.BILINEAR)


def write_broken(path: Path, kind: int) -> None:
    """A file with an image suffix that cannot be decoded: truncated JPEG, empty, text, or a bad header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind % 4 == 0:
        buf = path.with_suffix(".tmp")
        Image.new("RGB", (200, 150), (10, 200, 30)).save(buf, "JPEG")
        data = buf.read_bytes()
        buf.unlink()
        path.write_bytes(data[: len(data) // 3])
    elif kind % 4 == 1:
        path.write_bytes(b"")
    elif kind % 4 == 2:
        path.write_text("not a photo\n")
    else:
        path.write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(200))


def make_tree(root: Path, n_good: int, n_broken: int, seed: int = 0, folders: int = 5,
              max_side: int = 640) -> tuple[list[Path], list[Path]]:
    """Write n_good mixed-size JPEGs (sides 64..max_side) and n_broken broken .jpg files under root (in
    `folders` subfolders, some nested); returns (good paths, broken paths)."""
    rng = np.random.default_rng(seed)
    good, broken = [], []
    for i in range(n_good + n_broken):
        sub = root / f"album{i % folders}" / ("day2" if i % 3 == 0 else "")
        sub.mkdir(parents=True, exist_ok=True)
        path = sub / f"img{i:05d}.jpg"
        if i % max(1, (n_good + n_broken) // max(1, n_broken)) == 1 and len(broken) < n_broken:
            write_broken(path, len(broken))
            broken.append(path)
        else:
            mixed_size_image(rng, max_side).save(path, "JPEG", quality=int(rng.integers(70, 95)))
            good.append(path)
    while len(broken) < n_broken:  # only when n_broken does not spread evenly
        path = root / f"broken{len(broken)}.jpg"
        write_broken(path, len(broken))
        broken.append(path)
    return good, broken


def rewrite(path: Path, rng: np.random.Generator, max_side: int = 640) -> None:
    """Replace a photo with another picture and move its mtime forward (as an editor saving over it would)."""
    before = path.stat().st_mtime_ns
    mixed_size_image(rng, max_side).save(path, "JPEG", quality=90)
    os.utime(path, ns=(before + 10**9, before + 10**9))
