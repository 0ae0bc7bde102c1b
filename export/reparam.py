"""Reparameterization (train-time branches and BatchNorms folded into single convs) and module counts around it."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

_DONE = "_edgeclip_reparameterized"


@torch.no_grad()
def reparameterize(model: nn.Module) -> nn.Module:
    """Fold `model` in place, once: its own `reparameterize()` (Apple, demo) or timm's `reparameterize_model`.

    Calling it again is a no-op (the reference functions raise on a second call).
    """
    if getattr(model, _DONE, False):
        return model
    if callable(getattr(model, "reparameterize", None)):
        model.reparameterize()
    else:
        from timm.utils.model import reparameterize_model

        model = reparameterize_model(model, inplace=True)
    fold_leftover_batchnorms(model)
    model.eval()
    setattr(model, _DONE, True)
    return model


def bn_scale_shift(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (scale, shift) with bn(x) == x * scale + shift in eval mode."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


def _bn_tail(bn: nn.Module) -> nn.Module:
    """What is left of a (timm BatchNormAct) norm once its affine part is folded away: its activation, if any."""
    tail = [m for name in ("drop", "act") if not isinstance(m := getattr(bn, name, nn.Identity()), nn.Identity)]
    return nn.Sequential(*tail) if tail else nn.Identity()


class ChannelAffine(nn.Module):
    """x * scale + shift per channel (dim 1): an eval BatchNorm without a BatchNormalization node."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor, tail: nn.Module) -> None:
        super().__init__()
        self.register_buffer("scale", scale.detach().clone())
        self.register_buffer("shift", shift.detach().clone())
        self.tail = tail

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return self.tail(x * self.scale.view(shape) + self.shift.view(shape))


@torch.no_grad()
def fold_leftover_batchnorms(model: nn.Module) -> int:
    """Fold BatchNorms the reference reparameterization keeps (timm ConvNormAct, FastViT attention norm).

    Conv->BN pairs go into the conv, the attention pre-norm into the qkv projection; any other BN becomes a
    per-channel affine. Returns how many BatchNorm modules were removed.
    """
    folded = 0
    for module in list(model.modules()):
        bn = getattr(module, "bn", None)
        conv = getattr(module, "conv", None)
        if type(module).__name__ == "ConvNormAct" and isinstance(bn, nn.modules.batchnorm._BatchNorm) \
                and isinstance(conv, nn.Conv2d) and getattr(module, "aa", None) is None:
            fused = fuse_conv_bn_eval(conv, bn)
            module.conv, module.bn = fused, _bn_tail(bn)
            folded += 1
        norm, mixer = getattr(module, "norm", None), getattr(module, "token_mixer", None)
        if type(module).__name__ == "AttentionBlock" and isinstance(norm, nn.BatchNorm2d) \
                and isinstance(getattr(mixer, "qkv", None), nn.Linear):
            scale, shift = bn_scale_shift(norm)
            qkv = mixer.qkv
            fused = nn.Linear(qkv.in_features, qkv.out_features, bias=True).to(qkv.weight)
            fused.weight.copy_(qkv.weight * scale.view(1, -1))
            fused.bias.copy_(qkv.weight @ shift + (qkv.bias if qkv.bias is not None else 0))
            mixer.qkv, module.norm = fused, nn.Identity()
            folded += 1
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm) and not child.training:
                setattr(module, child_name, ChannelAffine(*bn_scale_shift(child), _bn_tail(child)))
                folded += 1
    return folded


@torch.no_grad()
def executed_modules(model: nn.Module, run: Callable[[], object]) -> dict:
    """Count the leaf modules (and BatchNorms) that `run()` actually calls: the per-tower size of the torch graph."""
    seen: set[int] = set()
    bn = 0

    def hook(module: nn.Module, _inp: object, _out: object) -> None:
        nonlocal bn
        if id(module) not in seen:
            seen.add(id(module))
            bn += isinstance(module, nn.modules.batchnorm._BatchNorm)

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return {"leaf_modules": len(seen), "batchnorm_modules": bn}
