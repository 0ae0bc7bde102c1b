"""What the benchmark runs: one model variant on one execution provider, per tower, as numpy -> numpy callables.

ONNX bundles become runners here; the build side (benchmarks/) adds torch runners of the same shape,
so every engine goes through the same timing, accuracy and report code.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

TowerFn = Callable[[np.ndarray], np.ndarray]
TOWERS = ("image", "text")
# Asked for on every run so that a desktop report says why they are missing.
ALWAYS_ASKED = ("XnnpackExecutionProvider", "NnapiExecutionProvider")
NOT_ON_DEVICE = {
    "AzureExecutionProvider": "remote inference endpoint, not an on-device execution provider",
}
SOT_ID, EOT_ID = 49406, 49407


@dataclass
class Runner:
    """One (model, engine, variant, provider) with a lazily built callable per tower."""

    model_id: str
    engine: str  # "onnxruntime" or "torch"
    variant: str  # fp32, fp16, int8-cpu, int8-xnnpack, int8-dynamic, ...
    provider: str  # execution provider name, or e.g. "torch-cpu"
    factories: dict[str, Callable[[], TowerFn]]
    image_size: int
    context_length: int = 77
    bundle: Optional[str] = None
    manifest: Optional[dict] = None
    _open: dict[str, TowerFn] = field(default_factory=dict, repr=False)

    @property
    def label(self) -> str:
        """Short display name, e.g. `edgeclip int8-cpu` or `torch fp32`."""
        fixed = sorted({t.get("batch") for t in (self.manifest or {}).get("towers", {}).values()} - {"dynamic", None})
        return label_for(self.engine, self.variant) + (f" (fixed batch {fixed[0]})" if fixed else "")

    @property
    def key(self) -> tuple:
        """Identity of the runner inside one report."""
        return (self.model_id, self.engine, self.variant, self.provider, self.bundle)

    def tower(self, name: str) -> TowerFn:
        """The callable for one tower, built on first use (session creation can raise)."""
        if name not in self._open:
            self._open[name] = self.factories[name]()
        return self._open[name]

    def release(self, name: str) -> None:
        """Drop the tower's session so a long run does not hold every model in memory."""
        self._open.pop(name, None)

    def describe(self) -> dict:
        """The identifying fields that every report row of this runner carries."""
        return {
            "model": self.model_id,
            "engine": self.engine,
            "variant": self.variant,
            "provider": self.provider,
            "label": self.label,
            "bundle": self.bundle,
        }


def label_for(engine: str, variant: str) -> str:
    """`edgeclip int8-cpu` for our static INT8, `ort fp32` / `ort int8-dynamic` / `torch fp32` for the others."""
    if engine == "onnxruntime" and variant.startswith("int8-") and variant != "int8-dynamic":
        return f"edgeclip {variant}"
    prefix = "ort" if engine == "onnxruntime" else engine
    return f"{prefix} {variant}"


def variant_of(manifest: dict) -> str:
    """fp32 / fp16 / int8-<target> / int8-dynamic, from a bundle manifest.

    A bundle from the INT8 quantizer is int8-<target> even when its speed guard kept every tower fp32:
    it is still what a user of that target gets."""
    precisions = {t.get("precision", "fp32") for t in manifest.get("towers", {}).values()}
    precision = "int8" if "int8" in precisions else ("fp16" if "fp16" in precisions else "fp32")
    quant = manifest.get("quantization") or {}
    if precision != "int8" and not quant.get("target"):
        return precision
    if "dynamic" in str(quant.get("method", "")).lower():
        return "int8-dynamic"
    return f"int8-{quant.get('target', 'cpu')}"


def provider_plan(requested: Optional[list[str]], available: list[str]) -> tuple[list[str], dict[str, str]]:
    """Which providers to run, and why each asked-for one is skipped.

    `requested=None` means every provider of this onnxruntime build plus XNNPACK and NNAPI.
    Short names (cpu, xnnpack, nnapi, cuda) are accepted.
    """
    if requested is None:
        asked = list(available) + [p for p in ALWAYS_ASKED if p not in available]
    else:
        asked = [canonical_provider(p) for p in requested]
    run, skipped = [], {}
    for name in asked:
        if name in NOT_ON_DEVICE:
            skipped[name] = NOT_ON_DEVICE[name]
        elif name not in available:
            skipped[name] = f"not in this onnxruntime build (available: {', '.join(available)})"
        elif name not in run:
            run.append(name)
    return run, skipped


def canonical_provider(name: str) -> str:
    """`cpu` -> `CPUExecutionProvider`; full names pass through."""
    import onnxruntime as ort

    want = name.lower().removesuffix("executionprovider")
    for full in ort.get_all_providers():
        if full.lower().removesuffix("executionprovider") == want:
            return full
    raise ValueError(f"unknown execution provider {name!r}; known: {', '.join(ort.get_all_providers())}")


def session_fn(session, fixed_batch: Optional[int]) -> TowerFn:
    """Wrap an onnxruntime session as x -> y; fixed-batch graphs get padded chunks like the runtime does."""
    inp = session.get_inputs()[0]
    name, wants_int32 = inp.name, inp.type == "tensor(int32)"

    def run(x: np.ndarray) -> np.ndarray:
        if wants_int32:
            x = x.astype(np.int32)
        if not fixed_batch:
            return session.run(None, {name: x})[0]
        outs = []
        for start in range(0, len(x), fixed_batch):
            chunk = x[start : start + fixed_batch]
            n = len(chunk)
            if n < fixed_batch:
                pad = np.repeat(chunk[-1:], fixed_batch - n, axis=0)
                chunk = np.concatenate([chunk, pad])
            outs.append(session.run(None, {name: chunk})[0][:n])
        return np.concatenate(outs)

    return run


def bundle_runners(bundle_dir: Path, providers: list[str], threads: Optional[int]) -> list[Runner]:
    """One runner per provider for a bundle; sessions open lazily (see `Runner.tower`)."""
    from edgeclip.bundle import load_bundle

    bundle = load_bundle(bundle_dir, verify=True)
    size = bundle.preprocess.get("crop_size", bundle.preprocess.get("size", 224))
    context = int((bundle.manifest.get("tokenizer") or {}).get("context_length", 77))
    runners = []
    for provider in providers:
        factories = {
            t: _session_factory(bundle.tower_path(t), provider, threads, spec.get("batch", "dynamic"))
            for t, spec in bundle.towers.items()
        }
        runners.append(
            Runner(
                model_id=bundle.model_id,
                engine="onnxruntime",
                variant=variant_of(bundle.manifest),
                provider=provider,
                factories=factories,
                image_size=int(size),
                context_length=context,
                bundle=str(bundle.root),
                manifest=bundle.manifest,
            )
        )
    return runners


def _session_factory(onnx_path: Path, provider: str, threads: Optional[int], batch) -> Callable[[], TowerFn]:
    fixed = batch if isinstance(batch, int) else None

    def build() -> TowerFn:
        from runtime.session import create_session

        session, used = create_session(onnx_path, providers=[provider], threads=threads, fixed_shape=fixed is not None)
        if not used or used[0] != provider:
            raise ProviderFallback(f"{provider} did not take the graph; the session runs on {used}")
        return session_fn(session, fixed)

    return build


class ProviderFallback(RuntimeError):
    """The requested provider was dropped when the session was created."""


def image_batch(size: int, batch: int, seed: int = 0) -> np.ndarray:
    """Deterministic model-space images [batch, 3, size, size] in [0, 1]."""
    rng = np.random.default_rng(seed)
    return rng.random((batch, 3, size, size), dtype=np.float32)


def token_batch(context_length: int, batch: int, seed: int = 0) -> np.ndarray:
    """Deterministic caption-like token ids: sot, 12 word ids, eot, zero padding."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((batch, context_length), dtype=np.int64)
    n = min(12, context_length - 2)
    ids[:, 0] = SOT_ID
    ids[:, 1 : 1 + n] = rng.integers(256, 40000, size=(batch, n))
    ids[:, 1 + n] = EOT_ID
    return ids
