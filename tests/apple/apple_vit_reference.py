"""MobileCLIP-B's image tower as Apple's ml-mobileclip computes it, in plain torch.nn.functional on Apple's keys.

An independent reference for parity tests: it shares no code with export's builder (timm) or key converter.
Facts from Apple's `mobileclip/models/vit.py` and `modules/common/transformer.py`:
- conv stem: three ConvNormAct (4x4/4, 2x2/2, 2x2/2); ConvNormAct pads (kernel - 1) // 2 on each side, so the
  first conv is padded by 1 pixel and the others not; the first two have BatchNorm (eps 1e-5) and exact GELU;
- learnable positional embedding added to the patch tokens only, then a class token is prepended;
- 12 pre-norm blocks (LayerNorm eps 1e-5, 12 heads, qkv laid out as [3, heads, head_dim], GELU MLP);
- final LayerNorm, class token, `classifier.proj` as x @ proj (no bias).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

PREFIX = "image_encoder.model."
STEM = ((4, 4), (2, 2), (2, 2))  # (kernel, stride) of the three stem convs
HEADS = 12
EPS = 1e-5


def _ln(x: torch.Tensor, sd: dict, name: str) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), sd[name + "weight"], sd[name + "bias"], eps=EPS)


def _stem(x: torch.Tensor, sd: dict, pad: bool) -> torch.Tensor:
    for i, (kernel, stride) in enumerate(STEM):
        name = f"{PREFIX}patch_emb.{i}.block."
        padding = (kernel - 1) // 2 if pad else 0
        x = F.conv2d(x, sd[name + "conv.weight"], sd.get(name + "conv.bias"), stride=stride, padding=padding)
        if name + "norm.weight" in sd:
            x = F.batch_norm(x, sd[name + "norm.running_mean"], sd[name + "norm.running_var"],
                             sd[name + "norm.weight"], sd[name + "norm.bias"], training=False, eps=EPS)
            x = F.gelu(x)
    return x


def _block(x: torch.Tensor, sd: dict, layer: int) -> torch.Tensor:
    name = f"{PREFIX}transformer.{layer}."
    n, length, dim = x.shape
    y = _ln(x, sd, name + "pre_norm_mha.0.")
    qkv = F.linear(y, sd[name + "pre_norm_mha.1.qkv_proj.weight"], sd[name + "pre_norm_mha.1.qkv_proj.bias"])
    qkv = qkv.reshape(n, length, 3, HEADS, dim // HEADS).permute(2, 0, 3, 1, 4)  # [3, n, heads, length, d]
    q, k, v = qkv[0] * (dim // HEADS) ** -0.5, qkv[1], qkv[2]
    attn = torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v
    attn = attn.transpose(1, 2).reshape(n, length, dim)
    x = x + F.linear(attn, sd[name + "pre_norm_mha.1.out_proj.weight"], sd[name + "pre_norm_mha.1.out_proj.bias"])
    y = _ln(x, sd, name + "pre_norm_ffn.0.")
    y = F.gelu(F.linear(y, sd[name + "pre_norm_ffn.1.weight"], sd[name + "pre_norm_ffn.1.bias"]))
    return x + F.linear(y, sd[name + "pre_norm_ffn.4.weight"], sd[name + "pre_norm_ffn.4.bias"])


@torch.no_grad()
def apple_vit_encode_image(sd: dict, images: torch.Tensor, pad_stem: bool = True) -> torch.Tensor:
    """Unnormalized image embeddings of an Apple-layout MobileCLIP-B state_dict (`pad_stem=False`: timm's stem)."""
    x = _stem(images.float(), sd, pad_stem)
    n, dim = x.shape[:2]
    tokens = x.flatten(2).transpose(1, 2)
    pos = sd[PREFIX + "pos_embed.pos_embed.pos_embed"]
    assert pos.shape[2] == tokens.shape[1], "inputs other than 224x224 need the positional interpolation"
    tokens = tokens + pos.reshape(1, -1, dim)
    x = torch.cat([sd[PREFIX + "cls_token"].expand(n, -1, -1), tokens], dim=1)
    layers = sorted({int(k[len(PREFIX + "transformer."):].split(".")[0]) for k in sd
                     if k.startswith(PREFIX + "transformer.")})
    for layer in layers:
        x = _block(x, sd, layer)
    x = _ln(x, sd, PREFIX + "post_transformer_norm.")
    return x[:, 0] @ sd[PREFIX + "classifier.proj"]
