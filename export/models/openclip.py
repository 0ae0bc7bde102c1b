"""OpenCLIP-layout models: `open_clip.create_model(name)`, the exact reference for those checkpoints.

The model is built on the `meta` device (random init of 50-450 M parameters would take seconds for
nothing); the checkpoint loader then assigns the checkpoint's tensors. `onehot_eot_pooling` swaps
OpenCLIP's end-of-text indexing for the NNAPI-friendly one-hot MatMul while a graph is exported.
"""
from __future__ import annotations

import contextlib
import logging
import sys
from typing import Iterator, Optional

import torch
from torch import nn

from export.models.eot_pool import select_eot
from export.registry import ModelSpec

# OpenCLIP modules that call `text_global_pool` through their own global name
_POOL_USERS = ("open_clip.transformer", "open_clip.model")


def build_open_clip_model(spec: ModelSpec, vit_stem: Optional[str] = None) -> nn.Module:
    """The OpenCLIP model of `spec` with meta (unallocated) weights, to be filled from a checkpoint.

    `vit_stem` (ViT-B towers only; None keeps OpenCLIP's network): "padded" makes the tower Apple's ViT.
    """
    import open_clip

    if spec.open_clip_name is None:
        raise ValueError(f"{spec.model_id} has no OpenCLIP config")
    logging.disable(logging.WARNING)  # open_clip warns that no pretrained weights were loaded: that is intended
    try:
        with torch.device("meta"):
            model = open_clip.create_model(spec.open_clip_name, pretrained=None, device="meta")
    finally:
        logging.disable(logging.NOTSET)
    if vit_stem is not None:
        from export.models.vit_mci import set_stem

        set_stem(model.visual.trunk, vit_stem)
    return model.eval()


@contextlib.contextmanager
def onehot_eot_pooling() -> Iterator[None]:
    """While active, OpenCLIP's argmax text pooling uses `select_eot` (same numbers, no Tile/GatherElements).

    A no-op when open_clip was never imported: then no OpenCLIP model can be running.
    """
    modules = [sys.modules[name] for name in _POOL_USERS
               if name in sys.modules and hasattr(sys.modules[name], "text_global_pool")]
    originals = [m.text_global_pool for m in modules]
    if not modules:
        yield
        return
    original = originals[0]

    def pool(x, text=None, pool_type="argmax", eos_token_id=None):
        if pool_type == "argmax" and text is not None:
            return select_eot(x, text)
        return original(x, text, pool_type, eos_token_id)

    for m in modules:
        m.text_global_pool = pool
    try:
        yield
    finally:
        for m, fn in zip(modules, originals):
            m.text_global_pool = fn
