"""Re-apply a reinforced sample's stored augmentations, then the runtime's own preprocessing.

A DataCompDR ``param_aug`` entry is ``[[i, j, h, w], rand_augment]``: the ``random_resized_crop``
box (top, left, height, width in original pixels) and ``null`` or ``[[op_index, magnitude], ...]``.
The crop is cut from the original image and resized to the model's square input (bicubic, like the
generating transform), so the calibration view shows exactly what the teacher saw; the result then
goes through ``edgeclip.preprocess.preprocess_image`` so scaling/normalization equal the device's.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from quantize.errors import QuantizeError

# torchvision RandAugment's op order, which DataCompDR's stored op indices refer to.
RAND_AUGMENT_OPS = (
    "Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
    "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize",
)
GENERATION_SIZE = 224  # DataCompDR's stored views were 224x224; translations are rescaled from it


class AugmentError(QuantizeError):
    """A stored augmentation entry is malformed or out of range (the sample is skipped)."""


def parse_entry(entry) -> tuple[tuple[int, int, int, int], list[tuple[int, float]] | None]:
    """Split one ``param_aug`` entry into a crop box and an optional RandAugment op list."""
    if not isinstance(entry, (list, tuple)) or not entry:
        raise AugmentError(f"param_aug entry {entry!r} is not a non-empty list")
    box = entry[0]
    if not isinstance(box, (list, tuple)) or len(box) != 4 or not all(isinstance(v, (int, float)) for v in box):
        raise AugmentError(f"random_resized_crop params {box!r} are not [i, j, h, w]")
    i, j, h, w = (int(round(v)) for v in box)
    ops = entry[1] if len(entry) > 1 else None
    if ops is None:
        return (i, j, h, w), None
    try:
        parsed = [(int(op), float(mag)) for op, mag in ops]
    except (TypeError, ValueError) as exc:
        raise AugmentError(f"rand_augment params {ops!r} are not [[op_index, magnitude], ...]") from exc
    for op, _ in parsed:
        if not 0 <= op < len(RAND_AUGMENT_OPS):
            raise AugmentError(f"rand_augment op index {op} is outside 0..{len(RAND_AUGMENT_OPS) - 1}")
    return (i, j, h, w), parsed


def apply_crop(image: Image.Image, box: Sequence[int], size: int) -> Image.Image:
    """Cut ``box`` = (top, left, height, width) from the original image and resize it to size x size."""
    i, j, h, w = box
    if h <= 0 or w <= 0 or i < 0 or j < 0 or i + h > image.height or j + w > image.width:
        raise AugmentError(f"crop box {list(box)} does not fit a {image.width}x{image.height} image")
    return image.crop((j, i, j + w, i + h)).resize((size, size), Image.Resampling.BICUBIC)


def apply_rand_augment(image: Image.Image, ops: list[tuple[int, float]], generation_size: int = GENERATION_SIZE
                       ) -> Image.Image:
    """Apply stored RandAugment ops (torchvision magnitude semantics, nearest filtering, black fill)."""
    for op, magnitude in ops:
        image = _apply_op(image, RAND_AUGMENT_OPS[op], magnitude, image.width / generation_size)
    return image


def _apply_op(img: Image.Image, name: str, m: float, scale: float) -> Image.Image:
    """One RandAugment op with Pillow; magnitudes are the signed values torchvision stores."""
    nearest = Image.Resampling.NEAREST
    if name == "ShearX":
        return img.transform(img.size, Image.Transform.AFFINE, (1, m, 0, 0, 1, 0), nearest)
    if name == "ShearY":
        return img.transform(img.size, Image.Transform.AFFINE, (1, 0, 0, m, 1, 0), nearest)
    if name == "TranslateX":
        return img.transform(img.size, Image.Transform.AFFINE, (1, 0, -int(m * scale), 0, 1, 0), nearest)
    if name == "TranslateY":
        return img.transform(img.size, Image.Transform.AFFINE, (1, 0, 0, 0, 1, -int(m * scale)), nearest)
    if name == "Rotate":
        return img.rotate(m, resample=nearest)
    if name in ("Brightness", "Color", "Contrast", "Sharpness"):
        return getattr(ImageEnhance, name)(img).enhance(1.0 + m)
    if name == "Posterize":
        return ImageOps.posterize(img, min(8, max(1, int(m))))
    if name == "Solarize":
        return ImageOps.solarize(img, m)
    if name == "AutoContrast":
        return ImageOps.autocontrast(img)
    if name == "Equalize":
        return ImageOps.equalize(img)
    return img  # Identity


def augmented_view(image: Image.Image, entry, spec: dict, rand_augment: bool = False) -> np.ndarray:
    """The model input [3, S, S] for one stored augmentation of ``image`` (runtime preprocessing)."""
    from edgeclip.preprocess import preprocess_image

    box, ops = parse_entry(entry)
    view = apply_crop(image, box, int(spec.get("crop_size") or spec["size"]))
    if rand_augment and ops:
        view = apply_rand_augment(view, ops)
    return preprocess_image(view, spec)


def sample_views(sample, spec: dict, views: int = 1, rand_augment: bool = False) -> list[np.ndarray]:
    """Up to ``views`` model inputs for a decoded sample: its first stored augmentations, or the
    plain runtime preprocessing when it stores none (a folder image)."""
    from edgeclip.preprocess import preprocess_image

    if not sample.param_aug:
        return [preprocess_image(sample.image, spec)]
    return [augmented_view(sample.image, e, spec, rand_augment) for e in sample.param_aug[:views]]
