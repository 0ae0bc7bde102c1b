"""MobileCLIP's ViT-B image tower (timm `vit_base_mci_224`) as the network its weights were trained in.

Apple's ViT (ml-mobileclip `ConvNormAct`) pads its first 4x4 stride-4 convolution by (kernel - 1) // 2 = 1
pixel per side; timm's `vit_base_mci_224` (and so OpenCLIP's MobileCLIP-B / MobileCLIP2-B) does not pad.
Both give 56x56 features, but with padding every patch sees a window shifted by one pixel with a zero
border. Apple's LayerNorms also use eps 1e-5 where timm's use 1e-6. So the two stem choices name the two
networks: "padded" is Apple's (MobileCLIP v1 B and B (LT) were trained in it), "unpadded" is timm's as
OpenCLIP runs it (MobileCLIP2-B was trained in it; OpenCLIP evaluates v1 B with it too).
"""
from __future__ import annotations

import timm
from torch import nn

from export.registry import VIT_STEM_PADDED, VIT_STEM_UNPADDED, VIT_STEMS

TIMM_NAME = "vit_base_mci_224"
STEM_CONV_PADDING = {VIT_STEM_PADDED: (1, 1), VIT_STEM_UNPADDED: (0, 0)}
LAYER_NORM_EPS = {VIT_STEM_PADDED: 1e-5, VIT_STEM_UNPADDED: 1e-6}


def _first_stem_conv(vit: nn.Module) -> nn.Conv2d:
    try:
        conv = vit.patch_embed.backbone[0].conv
    except (AttributeError, IndexError, TypeError):
        conv = None
    if not isinstance(conv, nn.Conv2d) or tuple(conv.kernel_size) != (4, 4):
        raise ValueError(f"{type(vit).__name__} has no MobileCLIP ViT conv stem (patch_embed.backbone.0.conv, 4x4)")
    return conv


def set_stem(vit: nn.Module, stem: str) -> nn.Module:
    """Make a `vit_base_mci_224` the network `stem` names (in place): first stem conv padding, LayerNorm eps."""
    if stem not in VIT_STEMS:
        raise ValueError(f"stem must be one of {', '.join(VIT_STEMS)}, not {stem!r}")
    _first_stem_conv(vit).padding = STEM_CONV_PADDING[stem]
    for module in vit.modules():
        if isinstance(module, nn.LayerNorm):
            module.eps = LAYER_NORM_EPS[stem]
    return vit


def stem_of(vit: nn.Module) -> str:
    """Which stem (`padded` / `unpadded`) a `vit_base_mci_224` currently has."""
    padding = tuple(_first_stem_conv(vit).padding)
    return next(name for name, pad in STEM_CONV_PADDING.items() if pad == padding)


def build_vit_mci(num_classes: int, stem: str) -> nn.Module:
    """timm's `vit_base_mci_224` with a `num_classes` head, made the network `stem` names."""
    return set_stem(timm.create_model(TIMM_NAME, num_classes=num_classes), stem)
