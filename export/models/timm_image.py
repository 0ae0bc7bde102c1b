"""Apple's image-only timm releases (`apple/mobileclip_*_timm`): timm's own model, its 512-class head the CLIP projection.

The reference for these checkpoints is timm itself: `timm.create_model(arch, num_classes=512)` exactly as timm
builds it (for `vit_base_mci_224` that is timm's unpadded 4x4 stem and LayerNorm eps 1e-6).
"""
from __future__ import annotations

import timm
from torch import nn

from export.registry import ModelSpec


def build_timm_image_model(spec: ModelSpec) -> nn.Module:
    """timm's `spec.timm_model` with an `embed_dim`-class head, in eval mode, with `encode_image` = its forward."""
    if not spec.timm_model:
        raise ValueError(f"{spec.model_id} is not a timm image-only model")
    model = timm.create_model(spec.timm_model, num_classes=spec.embed_dim, pretrained=False)
    model.encode_image = model.forward  # the image-tower call the exporter traces (no text tower)
    return model.eval()
