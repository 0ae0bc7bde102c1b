"""The ``demo`` model: a tiny image-text model built from MobileCLIP-S0's block types (NOT MobileCLIP).

Image tower: timm's FastViT (MobileOne stem, RepMixer stages, an attention stage with conv-FFN and
conditional positional encoding, as in MobileCLIP's MCi encoders) at a small width and depth, then
global average pooling and a linear projection. Text tower: the S0 "mct" text encoder (RepMixer conv
block, transformer layers, RepMixer conv block) with a narrow width. It is trained on the synthetic
reinforced dataset by ``python -m export.train_demo``; its weights ship in ``export/weights``.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import torch
from timm.models.fastvit import FastVit, RepConditionalPosEnc
from torch import nn

from export.models.demo_config import DEMO_CONFIG, DEMO_CONTEXT_LENGTH, DEMO_LAYOUT, DEMO_PREPROCESS, DEMO_WEIGHTS
from export.models.mct_text import MCTTextEncoder



class DemoCheckpointError(ValueError):
    """A demo checkpoint is missing, unreadable or was made for another configuration."""


class DemoCLIP(nn.Module):
    """Two towers with unnormalized outputs plus a learnable logit scale (used only in training)."""

    def __init__(self, config: dict = DEMO_CONFIG) -> None:
        super().__init__()
        img, txt = config["image"], config["text"]
        k = img["cpe_kernel"]
        self.visual = FastVit(
            layers=tuple(img["layers"]), embed_dims=tuple(img["embed_dims"]), mlp_ratios=tuple(img["mlp_ratios"]),
            token_mixers=tuple(img["token_mixers"]), se_downsamples=tuple(img["se_downsamples"]),
            pos_embs=(None, None, None, partial(RepConditionalPosEnc, spatial_shape=(k, k))),
            lkc_use_act=True, num_classes=config["embed_dim"], layer_scale_init_value=img["layer_scale_init"],
        )
        self.text = MCTTextEncoder(
            vocab_size=txt["vocab_size"], context_length=txt["context_length"], dim=txt["dim"],
            n_heads=txt["n_heads"], n_transformer_layers=txt["n_transformer_layers"],
            ffn_multiplier=txt["ffn_multiplier"], embed_dim=config["embed_dim"], conv_kernel=txt["conv_kernel"],
        )
        self.logit_scale = nn.Parameter(torch.tensor(float(torch.log(torch.tensor(1 / 0.07)))))
        self.reparameterized = False
        self._init_text()

    @torch.no_grad()
    def _init_text(self) -> None:
        """Width-aware init of the narrow text tower (fan-in scaled linears, small positions), from the
        global torch RNG; the encoder's own fixed 0.02 init made every caption's embedding nearly equal."""
        for name, p in self.text.named_parameters():
            if name.endswith(".weight") and p.ndim == 2 and "embedding_layer" not in name:
                p.normal_(0.0, p.shape[1] ** -0.5)
            elif name.endswith("pos_embed"):
                p.normal_(0.0, 0.01)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Preprocessed images [B, 3, S, S] -> unnormalized embeddings [B, D]."""
        return self.visual(images)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids [B, 77] (pad 0, eot 49407) -> unnormalized embeddings [B, D]."""
        return self.text(ids)

    @torch.no_grad()
    def reparameterize(self) -> "DemoCLIP":
        """Fold train-time branches (MobileOne, RepMixer, RepCPE, BatchNorms) for inference; idempotent."""
        if not self.reparameterized:
            for module in self.visual.modules():
                if module is not self.visual and hasattr(module, "reparameterize"):
                    module.reparameterize()
            self.text.reparameterize()
            self.reparameterized = True
        return self


def checkpoint_metadata() -> dict[str, str]:
    """The safetensors metadata every demo checkpoint carries (layout + the exact config)."""
    return {"layout": DEMO_LAYOUT, "config": json.dumps(DEMO_CONFIG, sort_keys=True)}


def load_demo_state_dict(path: str | Path = DEMO_WEIGHTS) -> dict[str, torch.Tensor]:
    """Read a demo safetensors checkpoint as float32 tensors, checking its layout and config."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise DemoCheckpointError(f"demo checkpoint {path} does not exist; train one with python -m export.train_demo")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            sd = {k: f.get_tensor(k).float() for k in f.keys()}
    except Exception as exc:  # safetensors raises several unrelated types for bad files
        raise DemoCheckpointError(f"{path} is not a readable safetensors file: {exc}") from None
    if meta.get("layout") != DEMO_LAYOUT:
        raise DemoCheckpointError(f"{path} has layout {meta.get('layout')!r}, expected {DEMO_LAYOUT!r}")
    if json.loads(meta.get("config", "null")) != json.loads(checkpoint_metadata()["config"]):
        raise DemoCheckpointError(f"{path} was trained for another demo configuration: {meta.get('config')}")
    return sd


def build_demo_model(checkpoint: str | Path | dict | None = DEMO_WEIGHTS, reparameterize: bool = False) -> DemoCLIP:
    """Build the demo model in eval mode, loading the packaged weights (or ``checkpoint``; None = untrained)."""
    model = DemoCLIP()
    if checkpoint is not None:
        sd = checkpoint if isinstance(checkpoint, dict) else load_demo_state_dict(checkpoint)
        missing, unexpected = model.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise DemoCheckpointError(f"demo checkpoint keys do not match: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.eval()
    return model.reparameterize() if reparameterize else model


def tokenize(texts: list[str]) -> torch.Tensor:
    """CLIP BPE token ids [N, 77] (sot 49406, eot 49407, pad 0) for the demo's text tower."""
    try:
        from edgeclip.tokenizer import load_tokenizer
    except ImportError:  # the project's tokenizer package is not installed: OpenCLIP's gives the same ids
        from open_clip.tokenizer import tokenize as open_clip_tokenize

        return open_clip_tokenize(list(texts), context_length=DEMO_CONTEXT_LENGTH).long()
    return torch.from_numpy(load_tokenizer(context_length=DEMO_CONTEXT_LENGTH)(list(texts))).long()


def torch_encoders(model: nn.Module, batch_size: int = 128):
    """(encode_image, encode_text) callables over PIL images / strings returning numpy [N, D] (fp32 torch)."""
    import numpy as np

    from edgeclip.preprocess import preprocess_image

    @torch.no_grad()
    def encode_image(images: list) -> np.ndarray:
        out = []
        for i in range(0, len(images), batch_size):
            batch = np.stack([preprocess_image(im, DEMO_PREPROCESS) for im in images[i:i + batch_size]])
            out.append(model.encode_image(torch.from_numpy(batch)).float().numpy())
        return np.concatenate(out)

    @torch.no_grad()
    def encode_text(texts: list[str]) -> np.ndarray:
        ids = tokenize(texts)
        return torch.cat([model.encode_text(ids[i:i + batch_size]) for i in range(0, len(ids), batch_size)]).numpy()

    return encode_image, encode_text
