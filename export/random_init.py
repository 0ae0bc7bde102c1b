"""Input-sensitive random checkpoints: weights whose embeddings really depend on the input.

PyTorch's default init makes MobileCLIP map every image to nearly one embedding (~0.02 % of the norm
depends on the input), so any quantization looks perfect on it. These checkpoints use Kaiming-normal
conv weights, perturbed BatchNorm statistics and affine parameters and layer scales around 0.1, so
a quantizer is judged on the input-dependent part of the embedding.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from edgeclip.files import atomic_path

MIN_INPUT_FRACTION = 0.10  # >= 10 % of each embedding's norm must survive mean subtraction (input-sensitive weights)


def _value(key: str, shape: tuple[int, ...], bn_prefixes: set[str], rng: np.random.Generator) -> np.ndarray:
    """One tensor of the checkpoint, by the role its key and shape imply."""
    prefix, _, leaf = key.rpartition(".")
    offset = 0.02 if key.startswith(("text", "transformer", "token")) else 0.1  # text: keep token signal on top
    n_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    if leaf == "running_mean":
        return offset * rng.standard_normal(shape)
    if leaf == "running_var":
        return 1.0 + 0.5 * rng.random(shape)
    if prefix in bn_prefixes and leaf == "weight":
        return 1.0 + 0.2 * rng.standard_normal(shape)
    if prefix in bn_prefixes and leaf == "bias":
        return offset * rng.standard_normal(shape)
    if "layer_scale" in leaf or leaf == "gamma":
        return 0.1 * (1.0 + 0.1 * rng.standard_normal(shape))
    if leaf == "logit_scale":
        return np.full(shape, np.log(1 / 0.07))
    if len(shape) == 4 and n_in > 1 and "pos_embed" not in key:  # convolution kernels: Kaiming normal (fan in)
        return rng.standard_normal(shape) * np.sqrt(2.0 / n_in)
    if len(shape) == 4 and n_in == 1:  # depthwise 1x1 scale branches
        return rng.standard_normal(shape)
    if "pos_embed" in key or "positional" in key:
        return 0.1 * rng.standard_normal(shape)
    if "embedding" in key:  # token table: unit scale, so tokens (not BN offsets) dominate the text stream
        return rng.standard_normal(shape)
    if len(shape) == 2:  # linear layers and projections (a projection stored [in, out] scales by its rows)
        fan_in = shape[0] if leaf in ("proj", "projection_layer", "text_projection") else shape[1]
        sharpen = 3.0 if "qkv" in key or "in_proj" in key else 1.0  # peaked attention: content over padding
        return sharpen * rng.standard_normal(shape) / np.sqrt(fan_in)
    if leaf == "weight":  # LayerNorm scale
        return 1.0 + 0.1 * rng.standard_normal(shape)
    return 0.02 * rng.standard_normal(shape)


def checkpoint_keys(model_id: str, layout: str | None = None) -> list[tuple[str, tuple[int, ...], bool]]:
    """(key, shape, is_integer) of the model's checkpoint in `layout` (default: Apple's when the model has it)."""
    from export.registry import get_spec

    spec = get_spec(model_id)
    layout = layout or spec.layouts[0]
    spec.source_for(layout)  # UnknownModelError when the model has no checkpoint in that layout
    if layout == "ml-mobileclip":
        from export.models.apple import apple_checkpoint_keys

        return [(k, tuple(s), k.endswith("num_batches_tracked")) for k, s in apple_checkpoint_keys(spec.model_id)]
    if spec.timm_model:  # an image-only timm release: timm's own state_dict
        from export.models.timm_image import build_timm_image_model

        with torch.device("meta"):
            sd = build_timm_image_model(spec).state_dict()
        return [(k, tuple(v.shape), not v.is_floating_point()) for k, v in sd.items()]
    import open_clip

    with torch.device("meta"):  # shapes and dtypes only: no seconds of random init
        sd = open_clip.create_model(spec.open_clip_name, device="meta").state_dict()
    return [(k, tuple(v.shape), not v.is_floating_point()) for k, v in sd.items()]


def _is_image_key(key: str) -> bool:
    return key.startswith(("image_encoder.", "visual."))


def input_sensitive_state_dict(model_id: str, seed: int = 0, layout: str | None = None,
                               image_only: bool = False) -> dict[str, torch.Tensor]:
    """An input-sensitive random state_dict of ``model_id`` in checkpoint ``layout`` (see `checkpoint_keys`).

    ``image_only``: the text tower's tensors are zeros (quick to make, for tests of the image tower alone).
    """
    rng = np.random.default_rng(seed)
    keys = checkpoint_keys(model_id, layout)
    bn_prefixes = {k.rpartition(".")[0] for k, _, _ in keys if k.endswith("running_mean")}
    sd = {}
    for key, shape, is_int in keys:
        if is_int or (image_only and not _is_image_key(key) and key != "logit_scale"):
            sd[key] = torch.zeros(shape, dtype=torch.int64 if is_int else torch.float32)
        else:
            sd[key] = torch.from_numpy(np.asarray(_value(key, shape, bn_prefixes, rng), dtype=np.float32))
    return sd


def make_input_sensitive_checkpoint(model_id: str, path: str | os.PathLike, seed: int = 0) -> Path:
    """Write an input-sensitive random checkpoint for ``model_id`` to ``path`` (atomic); return the path."""
    sd = input_sensitive_state_dict(model_id, seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(sd, tmp)
    return path


@torch.no_grad()
def input_sensitivity(model_id: str, checkpoint: str | os.PathLike, images: np.ndarray, token_ids: np.ndarray
                      ) -> dict[str, float]:
    """Smallest fraction of each embedding's norm left after subtracting the mean embedding, per tower."""
    from export.api import build_model
    from quantize.measure import input_sensitivity as embedding_sensitivity

    model = build_model(model_id, checkpoint)
    out = {}
    for tower, x in (("image", torch.from_numpy(images)), ("text", torch.from_numpy(token_ids))):
        emb = (model.encode_image(x) if tower == "image" else model.encode_text(x)).double().numpy()
        out[tower] = embedding_sensitivity(emb)
    return out


def check_input_sensitive(model_id: str, checkpoint: str | os.PathLike, images: np.ndarray, token_ids: np.ndarray,
                          minimum: float = MIN_INPUT_FRACTION) -> dict[str, float]:
    """``input_sensitivity``, raising ValueError when a tower keeps less than ``minimum`` of the norm."""
    frac = input_sensitivity(model_id, checkpoint, images, token_ids)
    low = {t: f for t, f in frac.items() if f < minimum}
    if low:
        raise ValueError(f"{model_id} checkpoint {checkpoint} is not input-sensitive enough: {low} < {minimum}")
    return frac
