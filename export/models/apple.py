"""MobileCLIP-S0/S1/S2/B as torch modules that load Apple's own `ml-mobileclip` checkpoints.

Image towers are timm's `fastvit_mci0/1/2` (S0/S1/S2) and `vit_base_mci_224` (B); text towers are
`export.models.mct_text.TextTransformer`, whose names already match Apple's. `convert_apple_state_dict`
renames Apple's keys to this module's, `apple_checkpoint_keys` lists the Apple keys/shapes expected.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

import timm
import torch
from timm.models.fastvit import MobileOneBlock
from timm.models.fastvit import checkpoint_filter_fn as _fastvit_filter
from timm.utils.model import reparameterize_model
from torch import nn

from export.models.mct_text import TextTransformer
from export.models.vit_mci import TIMM_NAME as VIT_MCI, build_vit_mci
from export.registry import VIT_STEM_PADDED, UnknownModelError
from export.reparam import fold_leftover_batchnorms

IMAGE_PREFIX = "image_encoder.model."


@dataclass(frozen=True)
class AppleArch:
    """Architecture of one released MobileCLIP (from Apple's `mobileclip/configs/*.json`)."""

    timm_image: str
    text_layers: int
    text_conv_kernel: int | None  # the "mct" text variant (S0) has RepMixer conv blocks
    causal_text: bool
    embed_dim: int = 512


ARCHS = {
    "mobileclip-s0": AppleArch("fastvit_mci0", 4, 11, causal_text=False),
    "mobileclip-s1": AppleArch("fastvit_mci1", 12, None, causal_text=False),
    "mobileclip-s2": AppleArch("fastvit_mci2", 12, None, causal_text=False),
    "mobileclip-b": AppleArch("vit_base_mci_224", 12, None, causal_text=True),
}
ARCHS["mobileclip-b-lt"] = ARCHS["mobileclip-b"]  # B (LT): the same network, trained longer


def _arch(model_id: str) -> AppleArch:
    try:
        return ARCHS[model_id]
    except KeyError:
        raise UnknownModelError(
            f"no Apple ml-mobileclip architecture for {model_id!r} (known: {', '.join(ARCHS)})"
        ) from None


def _is_vit(arch: AppleArch) -> bool:
    return arch.timm_image.startswith("vit_")


class AppleMobileCLIP(nn.Module):
    """Image tower + text tower + logit scale; encode_* return unnormalized embeddings like Apple's CLIP."""

    def __init__(self, image_encoder: nn.Module, text_encoder: TextTransformer) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.logit_scale = nn.Parameter(torch.tensor(1 / 0.07).log())
        self._reparameterized = False

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.image_encoder(x)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(ids)

    @torch.no_grad()
    def reparameterize(self) -> "AppleMobileCLIP":
        """Fold all train-time branches into single convs, in place; a second call does nothing."""
        if not self._reparameterized:
            reparameterize_model(self.image_encoder, inplace=True)  # timm folds its own blocks
            fold_leftover_batchnorms(self.image_encoder)  # the conv+BN pairs and attention norms timm keeps
            self.text_encoder.reparameterize()
            self._reparameterized = True
        return self


def _image_encoder(arch: AppleArch, vit_stem: str) -> nn.Module:
    if arch.timm_image == VIT_MCI:
        return build_vit_mci(arch.embed_dim, vit_stem)  # "padded": Apple's ViT (see export/models/vit_mci.py)
    return timm.create_model(arch.timm_image, num_classes=arch.embed_dim)


def build_apple_model(model_id: str, vit_stem: Optional[str] = None) -> AppleMobileCLIP:
    """The train-time (un-reparameterized) MobileCLIP `model_id`, deterministically initialized, eval mode.

    `vit_stem` (ViT-B only): "padded" (default) is Apple's network; "unpadded" is timm's/OpenCLIP's stem.
    """
    arch = _arch(model_id)
    text = TextTransformer(n_transformer_layers=arch.text_layers, embed_dim=arch.embed_dim,
                           conv_kernel=arch.text_conv_kernel, causal=arch.causal_text)
    return AppleMobileCLIP(_image_encoder(arch, vit_stem or VIT_STEM_PADDED), text).eval()


# ---------------------------------------------------------------- ViT (MobileCLIP-B) key table
# (Apple name under image_encoder.model., timm vit_base_mci_224 name); "{}" is a layer number
_VIT_NAMES = (
    ("patch_emb.{}.block.conv.", "patch_embed.backbone.{}.conv."),
    ("patch_emb.{}.block.norm.", "patch_embed.backbone.{}.bn."),
    ("transformer.{}.pre_norm_mha.0.", "blocks.{}.norm1."),
    ("transformer.{}.pre_norm_mha.1.qkv_proj.", "blocks.{}.attn.qkv."),
    ("transformer.{}.pre_norm_mha.1.out_proj.", "blocks.{}.attn.proj."),
    ("transformer.{}.pre_norm_ffn.0.", "blocks.{}.norm2."),
    ("transformer.{}.pre_norm_ffn.1.", "blocks.{}.mlp.fc1."),
    ("transformer.{}.pre_norm_ffn.4.", "blocks.{}.mlp.fc2."),
    ("post_transformer_norm.", "norm."),
    ("cls_token", "cls_token"),
    ("pos_embed.pos_embed.pos_embed", "pos_embed"),
)


def _template_regex(template: str) -> re.Pattern:
    return re.compile("^" + re.escape(template).replace(r"\{\}", r"(\d+)"))


def _rename(key: str, table: tuple, src: int) -> str | None:
    """`key` renamed by the first matching (apple, timm) row, reading column `src`; None when none matches."""
    for row in table:
        m = _template_regex(row[src]).match(key)
        if m:
            return row[1 - src].format(*m.groups()) + key[m.end():]
    return None


def _vit_from_apple(sd: dict) -> dict:
    out = {}
    for key, value in sd.items():
        if key == "classifier.proj":  # [in, out] matrix used as x @ proj -> Linear weight + zero bias
            out["head.weight"] = value.t().contiguous()
            out["head.bias"] = value.new_zeros(value.shape[1])
            continue
        name = _rename(key, _VIT_NAMES, 0)
        if name == "pos_embed":
            value = value.reshape(1, value.shape[-2], value.shape[-1])
        out[name or key] = value
    return out


def _vit_to_apple(key: str, shape: tuple) -> tuple[str, tuple] | None:
    if key == "head.weight":
        return "classifier.proj", (shape[1], shape[0])
    if key == "head.bias":
        return None  # the Apple head has no bias (the converter supplies zeros)
    name = _rename(key, _VIT_NAMES, 1)
    if name is None:
        raise KeyError(f"no Apple name for timm ViT key {key}")
    if key == "pos_embed":
        shape = (1, *shape)
    return name, shape


# ---------------------------------------------------------------- FastViT (MCi) keys
def _fastvit_from_apple(sd: dict) -> dict:
    """timm's own remapping of Apple's MCi names, plus the CLIP projection as a zero-bias Linear."""
    proj = sd.get("head.proj")
    out = _fastvit_filter({k: v for k, v in sd.items() if k != "head.proj"}, None)
    if proj is not None:
        out["head.fc.weight"] = proj.t().contiguous()
        out["head.fc.bias"] = proj.new_zeros(proj.shape[1])
    return out


# timm name component -> Apple name component (inverse of timm's checkpoint_filter_fn renames)
_MCI_PARTS = {"stem": "patch_embed", "conv_kxk": "rbr_conv", "conv_scale": "rbr_scale", "identity": "rbr_skip",
              "final_conv": "conv_exp", "large_conv": "lkb_origin", "mlp": "convffn"}
_MCI_STAGE = re.compile(r"^stages\.(\d+)\.(downsample|pos_emb|blocks)\.")


def _fastvit_network_index(keys: list[str]) -> dict[tuple[int, str], int]:
    """Apple's flat `network.N` index of each (stage, part): per stage its downsample, pos_emb, then blocks."""
    present = {(int(m.group(1)), m.group(2)) for k in keys if (m := _MCI_STAGE.match(k))}
    order = sorted(present, key=lambda sp: (sp[0], ("downsample", "pos_emb", "blocks").index(sp[1])))
    return {sp: n for n, sp in enumerate(order)}


def _fastvit_to_apple(key: str, shape: tuple, network: dict, mobileone: set) -> tuple[str, tuple] | None:
    if key == "head.fc.weight":
        return "head.proj", (shape[1], shape[0])
    if key == "head.fc.bias":
        return None  # the Apple head has no bias (the converter supplies zeros)
    owner = key.rsplit(".se.", 1)[0]
    if ".se." in key and owner in mobileone:  # Apple's MobileOne SE names its convs reduce/expand
        key = key.replace(".se.fc1.", ".se.reduce.").replace(".se.fc2.", ".se.expand.")
    m = _MCI_STAGE.match(key)
    if m:  # stages.S.downsample.* / stages.S.pos_emb.pos_enc.* / stages.S.blocks.* -> network.N.*
        rest = key[m.end():]
        if m.group(2) == "pos_emb":
            rest = "pe." + rest[len("pos_enc."):]
        key = f"network.{network[int(m.group(1)), m.group(2)]}.{rest}"
    key = ".".join(_MCI_PARTS.get(part, part) for part in key.split("."))
    key = re.sub(r"(layer_scale(_\d)?)\.gamma$", r"\1", key)
    return key, shape


# ---------------------------------------------------------------- public key functions
def convert_apple_state_dict(model_id: str, sd: dict) -> dict:
    """Apple `ml-mobileclip` state_dict -> this module's state_dict (keys it does not know pass through unchanged)."""
    arch = _arch(model_id)
    image = {k[len(IMAGE_PREFIX):]: v for k, v in sd.items() if k.startswith(IMAGE_PREFIX)}
    out = {k: v for k, v in sd.items() if not k.startswith(IMAGE_PREFIX)}  # text_encoder.*, logit_scale
    converted = _vit_from_apple(image) if _is_vit(arch) else _fastvit_from_apple(image)
    out.update({"image_encoder." + k: v for k, v in converted.items()})
    return out


@lru_cache(maxsize=None)
def _apple_keys(model_id: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    arch = _arch(model_id)
    with torch.device("meta"):
        model = build_apple_model(model_id)
    state = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    image_keys = [k[len("image_encoder."):] for k in state if k.startswith("image_encoder.")]
    network = None if _is_vit(arch) else _fastvit_network_index(image_keys)
    mobileone = {name for name, mod in model.image_encoder.named_modules() if isinstance(mod, MobileOneBlock)}
    out = []
    for key, shape in state.items():
        if key.startswith("image_encoder."):
            inner = key[len("image_encoder."):]
            mapped = (_vit_to_apple(inner, shape) if network is None
                      else _fastvit_to_apple(inner, shape, network, mobileone))
            if mapped is not None:
                out.append((IMAGE_PREFIX + mapped[0], mapped[1]))
        else:
            out.append((key, shape))
    return tuple(out)


def apple_checkpoint_keys(model_id: str) -> list[tuple[str, tuple[int, ...]]]:
    """The (key, shape) pairs an Apple checkpoint of `model_id` must contain, in Apple's naming."""
    return list(_apple_keys(model_id))
