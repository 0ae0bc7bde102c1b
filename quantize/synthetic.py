"""A synthetic reinforced dataset (DataCompDR format) of rendered shape scenes, with a fixed teacher.

It lets the whole pipeline run offline: the ``demo`` model trains on the ``train`` split, INT8
calibration uses ``calib``, and zero-shot accuracy is measured on ``eval``, whose colour-shape
combinations never occur in training. Everything is deterministic given the seed (numpy + Pillow).
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from edgeclip.files import atomic_dir, atomic_path
from edgeclip.paths import edgeclip_home
from edgeclip.shards import iter_samples
from quantize.shards import ReinforcedSample, write_shards

DATASET_VERSION = 4
IMAGE_SIZE = 96
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30), "orange": (245, 140, 20), "yellow": (240, 220, 30), "green": (40, 170, 50),
    "cyan": (30, 200, 220), "blue": (30, 60, 220), "purple": (140, 40, 190), "pink": (250, 120, 190),
}
SHAPES = ("circle", "square", "triangle", "star", "cross", "ring")
SIZES = {"small": 0.17, "large": 0.26}  # radius as a fraction of the image side
POSITIONS = {"left": (-0.24, 0.0), "right": (0.24, 0.0), "top": (0.0, -0.24), "bottom": (0.0, 0.24), "middle": (0.0, 0.0)}
POSITION_PHRASES = {"left": "on the left", "right": "on the right", "top": "at the top",
                    "bottom": "at the bottom", "middle": "in the middle"}
BACKGROUNDS = ("plain", "stripes", "checker", "gradient", "noise")
OUTLINE_WIDTH = 2  # px of dark outline inside each object's edge, the same for every colour
# The RandAugment op list of DataCompDR, in the index order its stored augmentation parameters use.
RANDAUG_OPS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
               "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize")
# Ops the generator stores: colour-changing ops (Color, Posterize, Solarize, Equalize) would change the
# colour words' meaning, so they are never drawn.
STORED_RANDAUG = (0, 1, 2, 3, 4, 5, 6, 8, 9, 12)
# torchvision RandAugment's largest magnitude per op (translations in pixels of a 224-px view, as
# DataCompDR generated them); a stored magnitude is top * bin / 30 with bin <= RANDAUG_MAX_BIN, signed.
RANDAUG_MAX_MAGNITUDE = {"ShearX": 0.3, "ShearY": 0.3, "TranslateX": 150 / 331 * 224, "TranslateY": 150 / 331 * 224,
                         "Rotate": 30.0, "Brightness": 0.9, "Contrast": 0.9, "Sharpness": 0.9}
RANDAUG_MAX_BIN = 9
N_AUG = 10
N_SYN = 5
CROP_SCALE = (0.5, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
# One held-out shape per colour: these colour-shape combinations appear only in the eval split.
HELD_OUT = frozenset((c, SHAPES[i % len(SHAPES)]) for i, c in enumerate(COLOURS))
ZERO_SHOT_TEMPLATES = ("a photo of a {}.", "a {}.", "a picture of a {}.")
DEFAULT_SIZES = {"train": 20000, "calib": 256, "eval": 400}
SPLITS = tuple(DEFAULT_SIZES)
_SPLIT_IDS = {"train": 0, "calib": 1, "eval": 2}

# The teacher: a fixed Gaussian projection of a scene's attribute vector, plus seeded noise.
TEACHER_DIM = 64
TEACHER_SEED = 20240601
TEACHER_IMAGE_NOISE = 0.2
TEACHER_TEXT_NOISE = 0.1
_BLOCKS = (tuple(COLOURS), SHAPES, tuple(SIZES), tuple(POSITIONS), BACKGROUNDS)
_BLOCK_WEIGHTS = (1.0, 1.0, 0.5, 0.5, 0.3)
_N_ATTR = sum(len(b) for b in _BLOCKS)
_TEACHER_W = np.random.default_rng(TEACHER_SEED).standard_normal((_N_ATTR, TEACHER_DIM)) / np.sqrt(_N_ATTR)


class DatasetError(ValueError):
    """The synthetic dataset directory is missing, incomplete or from another version."""


@dataclass(frozen=True)
class SceneObject:
    """One drawn object: colour, shape, size and position names."""

    colour: str
    shape: str
    size: str
    position: str


@dataclass(frozen=True)
class Scene:
    """A scene: its objects (drawn in order, later ones occlude earlier ones) and background kind."""

    objects: tuple[SceneObject, ...]
    background: str


@dataclass
class ZeroShotSet:
    """The eval split as a zero-shot task: images, true class indices, class names and prompts."""

    images: list[Image.Image]
    labels: np.ndarray
    class_names: list[str]
    class_prompts: list[list[str]]


def class_names() -> list[str]:
    """All colour-shape classes ("red circle", ...), the zero-shot label space."""
    return [f"{c} {s}" for c in COLOURS for s in SHAPES]


ALL_BLOCKS = ("colour", "shape", "size", "position")


def attribute_vector(objects: Sequence[SceneObject], weights: Sequence[float], background: str | None,
                     blocks: Sequence[str] = ALL_BLOCKS) -> np.ndarray:
    """Weighted multi-hot attribute vector (colour, shape, size, position, background blocks).

    `blocks` names the object attributes that count (a caption naming only colours has only those)."""
    vec = np.zeros(_N_ATTR)
    for obj, w in zip(objects, weights):
        offset = 0
        for kind, block, bw, name in zip(ALL_BLOCKS, _BLOCKS, _BLOCK_WEIGHTS,
                                         (obj.colour, obj.shape, obj.size, obj.position)):
            if kind in blocks:
                vec[offset + block.index(name)] += w * bw
            offset += len(block)
    if background is not None:
        vec[_N_ATTR - len(BACKGROUNDS) + BACKGROUNDS.index(background)] += _BLOCK_WEIGHTS[-1]
    return vec


def teacher_embedding(attributes: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """The teacher: unit-normalize(attributes @ W), add noise * N(0, I/D), unit-normalize again."""
    e = attributes @ _TEACHER_W
    e = e / max(np.linalg.norm(e), 1e-12)
    e = e + noise * rng.standard_normal(TEACHER_DIM) / np.sqrt(TEACHER_DIM)
    return (e / np.linalg.norm(e)).astype(np.float32)


def sample_scene(rng: np.random.Generator, split: str) -> Scene:
    """Draw a scene: eval has one held-out-combination object; train/calib 1-3 seen-combination objects."""
    if split == "eval":
        combos = sorted(HELD_OUT)
        n = 1
    else:
        combos = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in HELD_OUT]
        n = int(rng.choice([1, 2, 3], p=[0.6, 0.25, 0.15]))
    positions = rng.permutation(list(POSITIONS))[:n]
    objects = []
    for pos in positions:
        colour, shape = combos[int(rng.integers(len(combos)))]
        objects.append(SceneObject(colour, shape, str(rng.choice(list(SIZES))), str(pos)))
    return Scene(tuple(objects), str(rng.choice(BACKGROUNDS)))


def _background(kind: str, rng: np.random.Generator) -> np.ndarray:
    """A low-saturation textured or photographic-noise background, HxWx3 float in [0, 255]."""
    s = IMAGE_SIZE
    base = rng.uniform(70, 190)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float64)
    if kind == "plain":
        grey = np.full((s, s), base)
    elif kind == "stripes":
        period, angle = rng.uniform(6, 16), rng.uniform(0, np.pi)
        grey = base + 35 * np.sign(np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period))
    elif kind == "checker":
        cell = int(rng.integers(6, 16))
        grey = base + 30 * (((xx // cell) + (yy // cell)) % 2 * 2 - 1)
    elif kind == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        grey = base + 60 * ((xx * np.cos(angle) + yy * np.sin(angle)) / s - 0.5)
    else:  # "noise": smooth 1/f-like noise, as in photographs
        coarse = rng.standard_normal((6, 6))
        smooth = np.asarray(Image.fromarray(coarse.astype(np.float32), mode="F").resize((s, s), Image.BICUBIC))
        grey = base + 25 * smooth + 8 * rng.standard_normal((s, s))
    tint = rng.uniform(-12, 12, size=3)
    return np.clip(grey[..., None] + tint, 0, 255)


def _shape_polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Polygon vertices of a polygonal shape centred at (cx, cy) with radius r."""
    if shape == "square":
        k = r * 0.85
        return [(cx - k, cy - k), (cx + k, cy - k), (cx + k, cy + k), (cx - k, cy + k)]
    if shape == "triangle":
        return [(cx + r * np.cos(a), cy + r * np.sin(a)) for a in np.deg2rad([-90, 30, 150])]
    if shape == "star":
        angles = np.deg2rad(np.arange(10) * 36 - 90)
        radii = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        return [(cx + q * np.cos(a), cy + q * np.sin(a)) for q, a in zip(radii, angles)]
    k = r * 0.33  # cross
    pts = [(-k, -r), (k, -r), (k, -k), (r, -k), (r, k), (k, k), (k, r), (-k, r), (-k, k), (-r, k), (-r, -k), (-k, -k)]
    return [(cx + x, cy + y) for x, y in pts]


def _object_mask(obj: SceneObject, rng: np.random.Generator) -> Image.Image:
    """The object's binary mask ("L" image), with a small positional jitter."""
    s = IMAGE_SIZE
    dx, dy = POSITIONS[obj.position]
    cx = s / 2 + dx * s + rng.uniform(-3, 3)
    cy = s / 2 + dy * s + rng.uniform(-3, 3)
    r = SIZES[obj.size] * s * rng.uniform(0.9, 1.1)
    mask = Image.new("L", (s, s), 0)
    draw = ImageDraw.Draw(mask)
    if obj.shape in ("circle", "ring"):
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        if obj.shape == "ring":
            q = r * 0.55
            draw.ellipse([cx - q, cy - q, cx + q, cy + q], fill=0)
    else:
        draw.polygon(_shape_polygon(obj.shape, cx, cy, r), fill=255)
    return mask


def render(scene: Scene, rng: np.random.Generator) -> tuple[Image.Image, list[np.ndarray]]:
    """Draw the scene; return the RGB image and each object's visible (unoccluded) boolean mask."""
    canvas = _background(scene.background, rng)
    masks = [np.asarray(_object_mask(o, rng)) > 127 for o in scene.objects]
    for obj, mask in zip(scene.objects, masks):
        shade = np.asarray(COLOURS[obj.colour], dtype=np.float64) * rng.uniform(0.9, 1.05)
        canvas[mask] = np.clip(shade + rng.normal(0, 4, size=(int(mask.sum()), 3)), 0, 255)
        if OUTLINE_WIDTH:
            inner = Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.MinFilter(2 * OUTLINE_WIDTH + 1))
            canvas[mask & ~(np.asarray(inner) > 127)] = rng.uniform(15, 45)
    visible = [m & ~np.any(masks[i + 1:], axis=0) if i + 1 < len(masks) else m for i, m in enumerate(masks)]
    return Image.fromarray(canvas.astype(np.uint8), "RGB"), visible


def _describe(obj: SceneObject, with_size: bool, with_position: bool) -> str:
    """'[size] colour shape [position phrase]'."""
    words = ([obj.size] if with_size else []) + [obj.colour, obj.shape]
    text = " ".join(words)
    return f"{text} {POSITION_PHRASES[obj.position]}" if with_position else text


def _join(parts: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def captions(scene: Scene, rng: np.random.Generator) -> tuple[str, list[str], list[tuple[bool, tuple[str, ...]]]]:
    """The original alt-text-like caption and 5 paraphrases; for each, whether it mentions the background
    and which object attributes it names (two paraphrases name only the colours, or only the shapes)."""
    objs = list(scene.objects)
    original = _join([_describe(o, False, False) for o in objs])
    bg = f"{scene.background} background" if scene.background != "plain" else "plain background"
    order = [objs[i] for i in rng.permutation(len(objs))]
    syn = [
        "a photo of " + _join(["a " + _describe(o, True, False) for o in objs]) + ".",
        "an image showing " + _join(["a " + _describe(o, False, True) for o in order]) + ".",
        _join(["a " + _describe(o, True, True) for o in objs]) + f" on a {bg}.",
        "there is something " + _join([o.colour for o in order]) + " in this picture.",
        "a picture of " + _join(["a " + o.shape for o in objs]) + ".",
    ]
    full = ALL_BLOCKS
    return original, syn, [(False, full), (False, full), (False, full), (True, full), (False, ("colour",)),
                           (False, ("shape",))]


def _crop_params(rng: np.random.Generator) -> list[int]:
    """Random-resized-crop [top, left, height, width] in original-image pixels (torchvision's rule)."""
    area = IMAGE_SIZE * IMAGE_SIZE
    for _ in range(10):
        target = area * rng.uniform(*CROP_SCALE)
        ratio = np.exp(rng.uniform(np.log(CROP_RATIO[0]), np.log(CROP_RATIO[1])))
        w = int(round(np.sqrt(target * ratio)))
        h = int(round(np.sqrt(target / ratio)))
        if 0 < w <= IMAGE_SIZE and 0 < h <= IMAGE_SIZE:
            return [int(rng.integers(0, IMAGE_SIZE - h + 1)), int(rng.integers(0, IMAGE_SIZE - w + 1)), h, w]
    return [0, 0, IMAGE_SIZE, IMAGE_SIZE]


def _rand_augment_op(rng: np.random.Generator) -> list:
    """[op_index, magnitude]: a signed magnitude value as torchvision's RandAugment stores it (31 bins)."""
    op = int(rng.choice(STORED_RANDAUG))
    top = RANDAUG_MAX_MAGNITUDE.get(RANDAUG_OPS[op], 0.0)
    value = top * int(rng.integers(0, RANDAUG_MAX_BIN + 1)) / 30 * (1 if rng.random() < 0.5 else -1)
    return [op, round(value, 4) if top else 0.0]


def _param_aug(rng: np.random.Generator) -> list:
    """One stored augmentation: [[i, j, h, w], [[op_index, magnitude], [op_index, magnitude]] or None]."""
    crop = _crop_params(rng)
    if rng.random() < 0.5:
        return [crop, None]
    return [crop, [_rand_augment_op(rng) for _ in range(2)]]


def make_sample(seed: int, split: str, index: int) -> tuple[ReinforcedSample, Scene]:
    """Generate one reinforced sample; depends only on (seed, split, index)."""
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], index])
    scene = sample_scene(rng, split)
    image, visible = render(scene, rng)
    orig, syn, mentions = captions(scene, rng)
    param_aug = [_param_aug(rng) for _ in range(N_AUG)]
    areas = [max(int(m.sum()), 1) for m in visible]
    image_emb = []
    for crop, _ in param_aug:
        i, j, h, w = crop
        seen = [float(m[i:i + h, j:j + w].sum()) / a for m, a in zip(visible, areas)]
        image_emb.append(teacher_embedding(attribute_vector(scene.objects, seen, scene.background),
                                           TEACHER_IMAGE_NOISE, rng))
    text_emb = [
        teacher_embedding(attribute_vector(scene.objects, [1.0] * len(scene.objects),
                                           scene.background if bg else None, blocks), TEACHER_TEXT_NOISE, rng)
        for bg, blocks in mentions
    ]
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False)
    key = f"{split}{index:06d}"
    sample = ReinforcedSample(
        key=key, image=buf.getvalue(), image_ext="png", caption=orig, syn_captions=syn, param_aug=param_aug,
        image_emb=np.stack(image_emb), text_emb=np.stack(text_emb), url=f"synthetic://edgeclip/v{DATASET_VERSION}/{key}",
    )
    return sample, scene


def default_root(seed: int = 0) -> Path:
    """Cache location: $EDGECLIP_HOME/datasets/synthetic-v<version>-seed<seed> (default ~/.cache/edgeclip)."""
    return edgeclip_home() / "datasets" / f"synthetic-v{DATASET_VERSION}-seed{seed}"


def generate_split(out: Path, seed: int, split: str, n: int, progress: bool = False) -> None:
    """Write one split's shards into ``out`` (for eval also zero_shot.json: labels, class names, prompts)."""
    names = class_names()
    labels: dict[str, int] = {}

    def samples() -> Iterator[ReinforcedSample]:
        indices = range(n)
        if progress:
            from tqdm import tqdm
            indices = tqdm(indices, desc=f"synthetic {split}", unit="img")
        for idx in indices:
            sample, scene = make_sample(seed, split, idx)
            obj = scene.objects[0]
            labels[sample.key] = names.index(f"{obj.colour} {obj.shape}")
            yield sample

    # The HF copy of DataCompDR stores param_aug as a JSON string; calib uses that encoding.
    write_shards(samples(), out, prefix=split, samples_per_shard=500, paug_as_json_string=split == "calib")
    if split == "eval":
        zs = {"class_names": names, "templates": list(ZERO_SHOT_TEMPLATES), "labels": labels}
        (out / "zero_shot.json").write_text(json.dumps(zs, indent=1))


def ensure_dataset(root: str | os.PathLike | None = None, seed: int = 0, sizes: dict[str, int] | None = None,
                   progress: bool = True, splits: Sequence[str] = SPLITS) -> Path:
    """Return the dataset directory, generating each missing split of ``splits`` once (atomically).

    dataset.json fixes version, seed and split sizes; a root holding another dataset is refused. Splits are
    made on demand: INT8 calibration and evaluation need only calib/ and eval/, training also train/.
    """
    root = Path(root) if root is not None else default_root(seed)
    meta_path = root / "dataset.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if (meta.get("version"), meta.get("seed")) != (DATASET_VERSION, seed) or (
                sizes is not None and meta.get("sizes") != sizes):
            raise DatasetError(f"{root} holds a different synthetic dataset ({meta}); remove it or pick another root")
        sizes = meta["sizes"]
    else:
        sizes = dict(DEFAULT_SIZES if sizes is None else sizes)
        meta = {"version": DATASET_VERSION, "seed": seed, "sizes": sizes, "image_size": IMAGE_SIZE,
                "teacher_dim": TEACHER_DIM, "held_out": sorted(f"{c} {s}" for c, s in HELD_OUT)}
        root.mkdir(parents=True, exist_ok=True)
        with atomic_path(meta_path) as tmp_meta:
            tmp_meta.write_text(json.dumps(meta, indent=1))
    for split in splits:
        if (root / split).is_dir():
            continue
        if split not in sizes:
            raise DatasetError(f"unknown split {split!r}; the dataset has {', '.join(sizes)}")
        with atomic_dir(root / split, exist_ok=True) as tmp:  # another process may finish this split first
            generate_split(tmp, seed, split, sizes[split], progress=progress)
    return root


def split_shards(root: str | os.PathLike, split: str) -> list[Path]:
    """The shard files of one split, in order."""
    paths = sorted((Path(root) / split).glob("*.tar"))
    if not paths:
        raise DatasetError(f"no shards for split {split!r} under {root}; run ensure_dataset() first")
    return paths


def load_zero_shot(root: str | os.PathLike) -> ZeroShotSet:
    """Load the eval split as a zero-shot classification set over all colour-shape classes."""
    meta_path = Path(root) / "eval" / "zero_shot.json"
    if not meta_path.is_file():
        raise DatasetError(f"{meta_path} is missing; run ensure_dataset() first")
    meta = json.loads(meta_path.read_text())
    images, labels = [], []
    for sample in iter_samples(split_shards(root, "eval"), strict=True):
        images.append(sample.image)
        labels.append(meta["labels"][sample.key])
    prompts = [[t.format(name) for t in meta["templates"]] for name in meta["class_names"]]
    return ZeroShotSet(images, np.asarray(labels, dtype=np.int64), meta["class_names"], prompts)


def evaluate_zero_shot(encode_image: Callable[[list], np.ndarray], encode_text: Callable[[list], np.ndarray],
                       zs: ZeroShotSet, batch_size: int = 100) -> float:
    """Top-1 zero-shot accuracy in [0, 1]: each image vs the mean normalized prompt embedding per class."""
    from runtime.bench_accuracy import class_embeddings, top1

    classes = class_embeddings(encode_text([p for prompts in zs.class_prompts for p in prompts]), zs.class_prompts)
    image = np.concatenate([encode_image(zs.images[i:i + batch_size]) for i in range(0, len(zs.images), batch_size)])
    return top1(image, classes, zs.labels)
