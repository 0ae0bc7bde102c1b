"""OpenCLIP-layout models: `open_clip.create_model(name)`, the exact reference for those checkpoints.

The model is built on the `meta` device (random init of 50-450 M parameters would take seconds for
nothing); the checkpoint loader then assigns the checkpoint's tensors.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from export.registry import ModelSpec


def build_open_clip_model(spec: ModelSpec) -> nn.Module:
    """The OpenCLIP model of `spec` with meta (unallocated) weights, to be filled from a checkpoint."""
    import open_clip

    if spec.open_clip_name is None:
        raise ValueError(f"{spec.model_id} has no OpenCLIP config")
    logging.disable(logging.WARNING)  # open_clip warns that no pretrained weights were loaded: that is intended
    try:
        with torch.device("meta"):
            model = open_clip.create_model(spec.open_clip_name, pretrained=None, device="meta")
    finally:
        logging.disable(logging.NOTSET)
    return model.eval()
