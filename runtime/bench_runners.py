"""What the benchmark runs: one model variant on one execution provider, per tower, as numpy -> numpy callables.

ONNX bundles become runners here; the build side (benchmarks/) adds torch runners of the same shape,
so every engine goes through the same timing, accuracy and report code.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional

import numpy as np

from edgeclip.tokenizer.constants import EOT_ID, SOT_ID

TowerFn = Callable[[np.ndarray], np.ndarray]
TOWERS = ("image", "text")
# Asked for on every run so that a desktop report says why they are missing.
ALWAYS_ASKED = ("XnnpackExecutionProvider", "NnapiExecutionProvider")
NOT_ON_DEVICE = {
    "AzureExecutionProvider": "remote inference endpoint, not an on-device execution provider",
}


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
    # How a fresh process rebuilds this runner (JSON-able): {"factory": name, "kwargs": {...}}, plus "worker":
    # the module run as that process when the factory is not one of RUNNER_FACTORIES (default runtime.bench_worker).
    recipe: Optional[dict] = None
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
    from runtime.session import run_batched

    inp, out = session.get_inputs()[0], session.get_outputs()[0]
    wants_int32 = inp.type == "tensor(int32)"
    return lambda x: run_batched(session, inp.name, out.name, x.astype(np.int32) if wants_int32 else x, fixed_batch)


def bundle_runners(bundle_dir: Path, providers: list[str], threads: Optional[int]) -> list[Runner]:
    """One runner per provider for a bundle (verified once); sessions open lazily (see `Runner.tower`)."""
    from edgeclip.bundle import load_bundle

    load_bundle(bundle_dir, verify=True)
    return [bundle_runner(str(bundle_dir), provider, threads) for provider in providers]


def bundle_runner(bundle_dir: str, provider: str, threads: Optional[int]) -> Runner:
    """The runner of one bundle on one provider (the bundle's hashes are not re-checked here)."""
    from edgeclip.bundle import load_bundle

    bundle = load_bundle(bundle_dir, verify=False)
    size = bundle.preprocess.get("crop_size", bundle.preprocess.get("size", 224))
    context = bundle.context_length
    factories = {
        t: _session_factory(bundle.tower_path(t), provider, threads, spec.get("batch", "dynamic"), spec.get("precision"))
        for t, spec in bundle.towers.items()
    }
    return Runner(model_id=bundle.model_id, engine="onnxruntime", variant=variant_of(bundle.manifest),
                  provider=provider, factories=factories, image_size=int(size), context_length=context,
                  bundle=str(bundle.root), manifest=bundle.manifest,
                  recipe={"factory": "bundle",
                          "kwargs": {"bundle_dir": str(bundle.root), "provider": provider, "threads": threads}})


RUNNER_FACTORIES: dict[str, Callable[..., Runner]] = {"bundle": bundle_runner}


def runner_from_recipe(recipe: dict, factories: Mapping[str, Callable[..., Runner]] = RUNNER_FACTORIES) -> Runner:
    """Rebuild a runner from its recipe (in a benchmark child process) with the factory it names."""
    factory = factories.get(recipe["factory"])
    if factory is None:
        raise ValueError(f"no runner factory {recipe['factory']!r} in this worker (known: {', '.join(sorted(factories))}); "
                         "a recipe from elsewhere names its worker module")
    return factory(**recipe["kwargs"])


def _session_factory(onnx_path: Path, provider: str, threads: Optional[int], batch,
                     precision: Optional[str]) -> Callable[[], TowerFn]:
    fixed = batch if isinstance(batch, int) else None

    def build() -> TowerFn:
        from runtime.session import create_session

        session, used = create_session(onnx_path, providers=[provider], threads=threads, fixed_shape=fixed is not None,
                                       precision=precision)
        if not used or used[0] != provider:
            raise ProviderFallback(f"{provider} did not take the graph; the session runs on {used}")
        return session_fn(session, fixed)

    return build


class ProviderFallback(RuntimeError):
    """The requested provider was dropped when the session was created."""


def failure_status(exc: Exception) -> tuple[str, str]:
    """("skipped", why) when a provider refused or dropped the graph, else ("error", what went wrong)."""
    from edgeclip.errors import ProviderError

    status = "skipped" if isinstance(exc, (ProviderFallback, ProviderError)) else "error"
    return status, f"{type(exc).__name__}: {exc}"[:500]


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
