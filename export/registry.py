"""Model registry: one ModelSpec per MobileCLIP variant (sizes, preprocessing, checkpoint layouts and sources).

Torch-free, so `--list` and other teams can read it without the build dependencies.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from export.models.demo_config import DEMO_EMBED_DIM, DEMO_IMAGE_SIZE, DEMO_LAYOUT, DEMO_PREPROCESS, DEMO_WEIGHTS

LAYOUT_APPLE = "ml-mobileclip"
LAYOUT_OPEN_CLIP = "open_clip"
LAYOUT_DEMO = DEMO_LAYOUT
LAYOUT_TIMM = "timm"  # image tower alone, as a timm model whose 512-class head is the CLIP projection
LAYOUTS = (LAYOUT_APPLE, LAYOUT_OPEN_CLIP, LAYOUT_DEMO, LAYOUT_TIMM)

# conv stem of the ViT-B image tower (export/models/vit_mci.py): Apple's code pads its first convolution, timm's not
VIT_STEM_PADDED = "padded"
VIT_STEM_UNPADDED = "unpadded"
VIT_STEMS = (VIT_STEM_PADDED, VIT_STEM_UNPADDED)

MOBILECLIP_MEAN_STD = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
OPENAI_MEAN_STD = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))


class UnknownModelError(ValueError):
    """A model id or short name that the registry does not know."""


@dataclass(frozen=True)
class Source:
    """Where a released checkpoint lives: Hugging Face repo + file name, and its key layout."""

    layout: str
    repo: Optional[str]
    filename: str

    @property
    def url(self) -> Optional[str]:
        return f"https://huggingface.co/{self.repo}/resolve/main/{self.filename}" if self.repo else None


@dataclass(frozen=True)
class ModelSpec:
    """What the build side needs to know about one model before touching torch."""

    model_id: str
    display_name: str
    image_size: int
    embed_dim: int
    params_image_m: float
    params_text_m: float
    sources: tuple[Source, ...]
    open_clip_name: Optional[str] = None
    mean_std: tuple = MOBILECLIP_MEAN_STD
    interpolation: str = "bilinear"
    context_length: int = 77
    aliases: tuple[str, ...] = field(default_factory=tuple)
    towers: tuple[str, ...] = ("image", "text")
    crop_pct: float = 1.0  # resize the short side to floor(image_size / crop_pct), then center-crop image_size
    timm_model: Optional[str] = None  # the timm architecture of an image-only (timm layout) model
    vit_stem: Optional[str] = None  # ViT-B CLIP towers: the stem the weights were trained with (the export default)

    @property
    def layouts(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.layout for s in self.sources))

    @property
    def preprocess(self) -> dict:
        """The bundle's `preprocess` block: resize shortest side, center crop, scale to [0, 1], normalize."""
        mean, std = self.mean_std
        s = self.image_size
        return {"size": s, "resize": math.floor(s / self.crop_pct), "resize_mode": "shortest",
                "interpolation": self.interpolation,
                "crop": "center", "crop_size": s, "mean": list(mean), "std": list(std)}

    def source_for(self, layout: str) -> Source:
        for s in self.sources:
            if s.layout == layout:
                return s
        raise UnknownModelError(f"{self.model_id} has no checkpoint in layout {layout!r} (has: {', '.join(self.layouts)})")


def _apple(name: str) -> Source:
    return Source(LAYOUT_APPLE, f"apple/MobileCLIP-{name.upper()}", f"mobileclip_{name}.pt")


def _oc_apple(name: str, filename: str = "open_clip_model.safetensors") -> Source:
    return Source(LAYOUT_OPEN_CLIP, f"apple/MobileCLIP-{name.upper()}-OpenCLIP", filename)


def _oc_timm(name: str) -> Source:
    return Source(LAYOUT_OPEN_CLIP, f"timm/MobileCLIP2-{name.upper()}-OpenCLIP", "open_clip_model.safetensors")


def _mc2_apple(name: str) -> Source:
    # Apple's own MobileCLIP2 files are OpenCLIP state_dicts saved with torch.save.
    return Source(LAYOUT_OPEN_CLIP, f"apple/MobileCLIP2-{name.upper()}", f"mobileclip2_{name}.pt")


def _timm(name: str) -> Source:
    # Apple's timm image towers; the Hub's safetensors conversion (model.safetensors) loads the same way
    return Source(LAYOUT_TIMM, f"apple/mobileclip_{name}_timm", "pytorch_model.bin")


def _timm_spec(clip: ModelSpec, timm_model: str, name: str, crop_pct: float) -> ModelSpec:
    """The image-only timm release of `clip`: same image tower, timm's preprocessing (bicubic, crop_pct)."""
    return ModelSpec(f"{clip.model_id}-timm", f"{clip.display_name} image tower (timm)", clip.image_size,
                     clip.embed_dim, clip.params_image_m, 0.0, (_timm(name),), mean_std=clip.mean_std,
                     interpolation="bicubic", aliases=tuple(f"{a}-timm" for a in clip.aliases), towers=("image",),
                     crop_pct=crop_pct, timm_model=timm_model,
                     vit_stem=VIT_STEM_UNPADDED if clip.vit_stem else None)  # timm builds its own, unpadded stem


def image_only_variant(spec: ModelSpec) -> Optional[ModelSpec]:
    """The timm image-only release of a CLIP model (`mobileclip-s0` -> `mobileclip-s0-timm`), None if it has none."""
    found = MODELS.get(f"{spec.model_id}-timm")
    return found if found is not None and LAYOUT_TIMM in found.layouts else None


def _specs() -> list[ModelSpec]:
    s0 = ModelSpec("mobileclip-s0", "MobileCLIP-S0", 256, 512, 11.4, 42.4, (_apple("s0"),), aliases=("s0",))
    s1 = ModelSpec("mobileclip-s1", "MobileCLIP-S1", 256, 512, 21.5, 63.4, (_apple("s1"), _oc_apple("s1"),
                   _oc_apple("s1", "open_clip_pytorch_model.bin")), open_clip_name="MobileCLIP-S1", aliases=("s1",))
    s2 = ModelSpec("mobileclip-s2", "MobileCLIP-S2", 256, 512, 35.7, 63.4, (_apple("s2"), _oc_apple("s2"),
                   _oc_apple("s2", "open_clip_pytorch_model.bin")), open_clip_name="MobileCLIP-S2", aliases=("s2",))
    b = ModelSpec("mobileclip-b", "MobileCLIP-B", 224, 512, 86.3, 63.4, (_apple("b"), _oc_apple("b"),
                  _oc_apple("b", "open_clip_pytorch_model.bin")), open_clip_name="MobileCLIP-B", aliases=("b",),
                  vit_stem=VIT_STEM_PADDED)
    # B (LT): B's architecture trained longer; OpenCLIP serves it as MobileCLIP-B, pretrained tag datacompdr_lt
    b_lt = ModelSpec("mobileclip-b-lt", "MobileCLIP-B (LT)", 224, 512, 86.3, 63.4,
                     (Source(LAYOUT_APPLE, "apple/MobileCLIP-B-LT", "mobileclip_blt.pt"), _oc_apple("b-lt"),
                      _oc_apple("b-lt", "open_clip_pytorch_model.bin")),
                     open_clip_name="MobileCLIP-B", aliases=("b-lt", "blt"), vit_stem=VIT_STEM_PADDED)
    # crop_pct from the releases' config.json: 0.95 for the FastViT towers, 0.9 for the ViT-B ones
    return [
        s0, s1, s2, b, b_lt,
        _timm_spec(s0, "fastvit_mci0", "s0", 0.95), _timm_spec(s1, "fastvit_mci1", "s1", 0.95),
        _timm_spec(s2, "fastvit_mci2", "s2", 0.95), _timm_spec(b, "vit_base_mci_224", "b", 0.9),
        _timm_spec(b_lt, "vit_base_mci_224", "b_lt", 0.9),
        ModelSpec("mobileclip2-s0", "MobileCLIP2-S0", 256, 512, 11.4, 63.4, (_oc_timm("s0"), _mc2_apple("s0")),
                  open_clip_name="MobileCLIP2-S0"),
        ModelSpec("mobileclip2-s2", "MobileCLIP2-S2", 256, 512, 35.7, 63.4, (_oc_timm("s2"), _mc2_apple("s2")),
                  open_clip_name="MobileCLIP2-S2"),
        ModelSpec("mobileclip2-b", "MobileCLIP2-B", 224, 512, 86.3, 63.4, (_oc_timm("b"), _mc2_apple("b")),
                  open_clip_name="MobileCLIP2-B", vit_stem=VIT_STEM_UNPADDED),
        ModelSpec("mobileclip2-s3", "MobileCLIP2-S3", 256, 768, 125.2, 123.7, (_oc_timm("s3"), _mc2_apple("s3")),
                  open_clip_name="MobileCLIP2-S3", mean_std=OPENAI_MEAN_STD),
        ModelSpec("mobileclip2-s4", "MobileCLIP2-S4", 256, 768, 321.8, 123.7, (_oc_timm("s4"), _mc2_apple("s4")),
                  open_clip_name="MobileCLIP2-S4", mean_std=OPENAI_MEAN_STD),
        ModelSpec("demo", "edgeclip demo (tiny, trained on the synthetic set)", DEMO_IMAGE_SIZE, DEMO_EMBED_DIM,
                  0.0, 0.0, (Source(LAYOUT_DEMO, None, DEMO_WEIGHTS.name),),
                  mean_std=(tuple(DEMO_PREPROCESS["mean"]), tuple(DEMO_PREPROCESS["std"])),
                  interpolation=DEMO_PREPROCESS["interpolation"]),
    ]


MODELS: dict[str, ModelSpec] = {spec.model_id: spec for spec in _specs()}
_ALIASES: dict[str, str] = {a: spec.model_id for spec in MODELS.values() for a in spec.aliases}


def resolve_model_id(name: str) -> str:
    """Canonical id for a short name (`s0`), a full id or an OpenCLIP name (`MobileCLIP2-S0`)."""
    key = str(name).strip().lower()
    if key in MODELS:
        return key
    if key in _ALIASES:
        return _ALIASES[key]
    known = ", ".join(list(MODELS) + sorted(_ALIASES))
    raise UnknownModelError(f"unknown model {name!r}; choose one of: {known}")


def get_spec(name: str) -> ModelSpec:
    """The ModelSpec for any accepted model name."""
    return MODELS[resolve_model_id(name)]
