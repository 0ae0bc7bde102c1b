"""MobileCLIP text towers: the "mct" encoder of S0 (RepMixer conv blocks around transformer layers)
and the plain "base" transformer of S1/S2/B, with Apple's checkpoint key names and ONNX-friendly code.

Parameter names mirror Apple's `text_encoder.*` checkpoint keys (without the prefix) so a checkpoint
loads with `load_state_dict(strict=True)`. `reparameterize()` folds the train-time branches
(BatchNorms, identity/skip branches, layer scales) into plain convolutions; it is idempotent.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from export.models.eot_pool import select_eot
from export.reparam import bn_scale_shift

_EPS_BN = 1e-5


def _depthwise_conv(dim: int, kernel: int, bias: bool) -> nn.Conv2d:
    """Depthwise (1, kernel) convolution along the token axis with 'same' padding."""
    return nn.Conv2d(dim, dim, (1, kernel), padding=(0, kernel // 2), groups=dim, bias=bias)


def _fused_conv(dim: int, weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    """A depthwise conv holding the given fused kernel [dim, 1, 1, k] and bias [dim]."""
    conv = _depthwise_conv(dim, weight.shape[-1], bias=True).to(weight.device, weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
    return conv


class ConvBN(nn.Module):
    """Depthwise token conv followed by BatchNorm (train-time layout `conv.weight`, `bn.*`)."""

    def __init__(self, dim: int, kernel: int) -> None:
        super().__init__()
        self.conv = _depthwise_conv(dim, kernel, bias=False)
        self.bn = nn.BatchNorm2d(dim, eps=_EPS_BN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))

    def kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The single conv kernel and bias equal to conv + BN."""
        scale, shift = bn_scale_shift(self.bn)
        return self.conv.weight * scale.reshape(-1, 1, 1, 1), shift


class RepBranches(nn.Module):
    """Sum of a BatchNorm skip branch and optional depthwise conv+BN branches (MobileOne without activation)."""

    def __init__(self, dim: int, kernel: int, n_conv: int) -> None:
        super().__init__()
        self.kernel = kernel
        self.rbr_skip = nn.BatchNorm2d(dim, eps=_EPS_BN)
        if n_conv:
            self.rbr_conv = nn.ModuleList(ConvBN(dim, kernel) for _ in range(n_conv))
        else:
            self.rbr_conv = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.rbr_skip(x)
        for branch in self.rbr_conv or ():
            out = out + branch(x)
        return out

    def kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The single depthwise kernel [dim, 1, 1, k] and bias equal to the sum of all branches."""
        scale, bias = bn_scale_shift(self.rbr_skip)
        kernel = torch.zeros(scale.shape[0], 1, 1, self.kernel, dtype=scale.dtype, device=scale.device)
        kernel[:, 0, 0, self.kernel // 2] = scale
        for branch in self.rbr_conv or ():
            k, b = branch.kernel_bias()
            kernel, bias = kernel + k, bias + b
        return kernel, bias


class RepMixer(nn.Module):
    """Token mixer x + layer_scale * (mixer(x) - norm(x)); reparameterizes into one depthwise conv."""

    def __init__(self, dim: int, kernel: int) -> None:
        super().__init__()
        self.norm = RepBranches(dim, kernel, n_conv=0)
        self.mixer = RepBranches(dim, kernel, n_conv=1)
        self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), 1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layer_scale * (self.mixer(x) - self.norm(x))

    def fused(self) -> nn.Conv2d:
        """One depthwise conv computing this mixer exactly (identity folded into the kernel centre)."""
        km, bm = self.mixer.kernel_bias()
        kn, bn = self.norm.kernel_bias()
        scale = self.layer_scale.reshape(-1)
        kernel = scale.reshape(-1, 1, 1, 1) * (km - kn)
        kernel[:, 0, 0, self.mixer.kernel // 2] += 1.0
        return _fused_conv(scale.shape[0], kernel, scale * (bm - bn))


class ConvFFN(nn.Module):
    """Depthwise conv+BN, then a 1x1-conv MLP with GELU."""

    def __init__(self, dim: int, hidden: int, kernel: int) -> None:
        super().__init__()
        self.conv = ConvBN(dim, kernel)
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.conv(x))))


class RepMixerBlock(nn.Module):
    """Conv block over tokens: RepMixer, then a layer-scaled ConvFFN residual; input/output [B, L, D]."""

    def __init__(self, dim: int, kernel: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.token_mixer: nn.Module = RepMixer(dim, kernel)
        self.convffn = ConvFFN(dim, int(dim * mlp_ratio), kernel)
        self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), 1e-5))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x.transpose(1, 2).unsqueeze(2)  # [B, D, 1, L]
        x = self.token_mixer(x)
        ffn = self.convffn(x)
        x = x + (ffn if self.layer_scale is None else self.layer_scale * ffn)
        return x.squeeze(2).transpose(1, 2)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold RepMixer branches, the FFN's BatchNorm and the block's layer scale into convs (idempotent)."""
        if isinstance(self.token_mixer, RepMixer):
            self.token_mixer = self.token_mixer.fused()
        if isinstance(self.convffn.conv, ConvBN):
            dim = self.convffn.conv.bn.num_features
            self.convffn.conv = _fused_conv(dim, *self.convffn.conv.kernel_bias())
        if self.layer_scale is not None:
            scale = self.layer_scale.reshape(-1)
            self.convffn.fc2.weight.mul_(scale.reshape(-1, 1, 1, 1))
            self.convffn.fc2.bias.mul_(scale)
            self.register_parameter("layer_scale", None)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (`qkv_proj`, `out_proj`)."""

    def __init__(self, dim: int, n_heads: int) -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"dim {dim} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.head_dim = dim // n_heads
        self.qkv_proj = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, length, _ = x.shape
        qkv = self.qkv_proj(x).reshape(batch, length, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # each [B, h, L, hd]
        attn = (q * self.head_dim**-0.5) @ k.transpose(-2, -1)
        if attn_mask is not None:
            attn = attn + attn_mask
        out = attn.softmax(dim=-1) @ v
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, -1))


class TransformerLayer(nn.Module):
    """Pre-norm transformer layer; Sequential indices match Apple's keys (`pre_norm_ffn.1`, `.4`)."""

    def __init__(self, dim: int, n_heads: int, ffn_dim: int) -> None:
        super().__init__()
        self.pre_norm_mha = nn.Sequential(nn.LayerNorm(dim), Attention(dim, n_heads))
        # index 3 is a (no-op at inference) dropout slot in the checkpoint layout
        self.pre_norm_ffn = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, ffn_dim), nn.GELU(), nn.Identity(), nn.Linear(ffn_dim, dim)
        )

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.pre_norm_mha[1](self.pre_norm_mha[0](x), attn_mask)
        return x + self.pre_norm_ffn(x)


class PositionalEmbedding(nn.Module):
    """Learned positions, stored [1, 1, L, D] under `pos_embed.pos_embed` as in Apple's checkpoints."""

    def __init__(self, context_length: int, dim: int) -> None:
        super().__init__()
        self.pos_embed = nn.Module()
        self.pos_embed.pos_embed = nn.Parameter(torch.zeros(1, 1, context_length, dim))

    def forward(self) -> torch.Tensor:
        return self.pos_embed.pos_embed[0]  # [1, L, D]


class TextTransformer(nn.Module):
    """MobileCLIP text encoder: ids [B, L] -> unnormalized embedding of the end-of-text token [B, embed_dim].

    `conv_kernel` set gives the "mct" variant (RepMixer block, transformer layers, RepMixer block);
    None gives the "base" variant. `causal` adds the causal attention mask (MobileCLIP-B).
    The end-of-text position is the argmax of the ids (eot has the highest id), so pad must be 0; its
    features are picked with a one-hot MatMul (`eot_pool.select_eot`) so NNAPI runs the pooling.
    """

    def __init__(
        self,
        vocab_size: int = 49408,
        context_length: int = 77,
        dim: int = 512,
        n_heads: int = 8,
        n_transformer_layers: int = 12,
        ffn_multiplier: float = 4.0,
        embed_dim: int = 512,
        conv_kernel: int | None = None,
        causal: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.context_length = context_length
        ffn_dim = int(math.ceil(dim * ffn_multiplier / 16.0) * 16)
        self.embedding_layer = nn.Embedding(vocab_size, dim)
        self.positional_embedding = PositionalEmbedding(context_length, dim)
        layers: list[nn.Module] = [TransformerLayer(dim, n_heads, ffn_dim) for _ in range(n_transformer_layers)]
        if conv_kernel is not None:
            layers = [RepMixerBlock(dim, conv_kernel), *layers, RepMixerBlock(dim, conv_kernel)]
        self.transformer = nn.ModuleList(layers)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.projection_layer = nn.Parameter(torch.zeros(dim, embed_dim))
        mask = None
        if causal:
            mask = torch.full((context_length, context_length), float("-inf")).triu(1)
        self.register_buffer("attn_mask", mask, persistent=False)
        self.init_weights(seed)

    @torch.no_grad()
    def init_weights(self, seed: int = 0) -> None:
        """Deterministic, seeded initialization (independent of the global RNG); checkpoints overwrite it."""
        gen = torch.Generator().manual_seed(seed)
        dim = self.final_layer_norm.normalized_shape[0]
        for name, p in self.named_parameters():
            if name.endswith("layer_scale"):
                p.fill_(1e-5)
            elif p.ndim <= 1:  # 1-D weights are LayerNorm/BatchNorm scales; the rest are biases
                p.fill_(1.0 if name.endswith("weight") else 0.0)
            elif name in ("projection_layer", "positional_embedding.pos_embed.pos_embed"):
                p.copy_(torch.randn(p.shape, generator=gen) * dim**-0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=gen).clamp_(-2, 2) * 0.02)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        tracing = torch.jit.is_tracing() or torch.compiler.is_compiling()
        if not tracing and (ids.ndim != 2 or ids.shape[1] != self.context_length):
            raise ValueError(f"expected token ids of shape [batch, {self.context_length}], got {tuple(ids.shape)}")
        x = self.embedding_layer(ids) + self.positional_embedding()
        for layer in self.transformer:
            x = layer(x, self.attn_mask)
        return self.final_layer_norm(select_eot(x, ids)) @ self.projection_layer

    def reparameterize(self) -> "TextTransformer":
        """Fuse every train-time branch for inference; calling it again changes nothing."""
        for layer in self.transformer:
            if isinstance(layer, RepMixerBlock):
                layer.reparameterize()
        return self


class MCTTextEncoder(TextTransformer):
    """MobileCLIP-S0's text tower ("mct"): RepMixer conv block, transformer layers, RepMixer conv block.

    Takes TextTransformer's keyword arguments (vocab_size, context_length, dim, n_heads, ffn_multiplier,
    embed_dim, seed) with S0's defaults; attention is never causal.
    """

    def __init__(self, *, n_transformer_layers: int = 4, conv_kernel: int = 11, **kwargs: Any) -> None:
        super().__init__(n_transformer_layers=n_transformer_layers, conv_kernel=conv_kernel, causal=False, **kwargs)
