"""Create ONNX Runtime sessions with the provider policy of runtime.providers (works with onnxruntime >= 1.20)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from edgeclip.errors import BundleError, EdgeclipError, ProviderError
from runtime import graph_cache
from runtime.providers import CPU, Requested, resolve_providers, session_threads

_MODEL_ERRORS = {"InvalidProtobuf", "InvalidGraph", "NoSuchFile", "NoModel", "InvalidArgument"}


def disabled_optimizers(precision: Optional[str]) -> list[str]:
    """Graph optimizers to turn off for a tower of this precision.

    fp16: the NCHWc layout pass. onnxruntime 1.32's CPU provider segfaults in it while creating a session for
    MobileCLIP2-S0's fp16 text graph; NCHWc kernels are float32-only, so fp16 graphs lose nothing without it.
    """
    return ["NchwcTransformer"] if precision == "fp16" else []


def create_session(
    onnx_path: Union[str, Path],
    providers: Requested = "auto",
    threads: Optional[int] = None,
    fixed_shape: bool = False,
    available: Optional[Sequence[str]] = None,
    precision: Optional[str] = None,
    cache: bool = False,
):
    """Build an InferenceSession for `onnx_path`; returns (session, providers it actually runs with).

    `precision` is the tower's manifest precision (fp32, fp16, int8); it selects `disabled_optimizers`.
    `cache`: on the CPU provider alone, load the graph's pre-optimized form from runtime.graph_cache (saving
    it on the first run), which skips ONNX Runtime's optimizer passes; outputs are the same.

    Raises BundleError when the file is not a loadable model and ProviderError when a provider fails.
    """
    import onnxruntime as ort

    chosen = resolve_providers(providers, available=available, fixed_shape=fixed_shape, threads=threads)
    names = [name for name, _ in chosen]
    intra, config = session_threads(names, threads)
    disabled = disabled_optimizers(precision)
    path = Path(onnx_path)

    def build(source: Path, save: Optional[Path] = None, optimize: bool = True):
        so = ort.SessionOptions()
        so.intra_op_num_threads = intra
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        so.enable_mem_pattern = False  # S0 INT8 image tower at batch 8: peak RSS 295 -> 212 MB, same latency
        for key, value in config.items():
            so.add_session_config_entry(key, value)
        if save is not None:
            so.optimized_model_filepath = str(save)
            for key, value in graph_cache.save_config().items():
                so.add_session_config_entry(key, value)
        if not optimize:
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return _open(ort, source, path.name, so, chosen, disabled)

    if cache and names == [CPU] and path.suffix == ".onnx" and path.is_file():
        session = _cached_session(path, names, disabled, build)
    else:
        session = build(path)
    return session, list(session.get_providers())


def _cached_session(path: Path, names: list[str], disabled: list[str], build):
    """A session from the graph's cached optimized form, made and saved first when there is none."""
    from edgeclip.bundle.verify_cache import cached_sha256

    key = graph_cache.entry_key(cached_sha256(path), names, disabled)
    graph = graph_cache.cached_graph(key)
    if graph is not None:
        try:
            return build(graph, optimize=False)
        except EdgeclipError:  # checked by its digest, yet refused by this ONNX Runtime: build it again
            graph_cache.discard(key)
    return graph_cache.build_entry(key, path, lambda save: build(path, save))


def _open(ort: Any, source: Path, name: str, so: Any, chosen: list, disabled: list[str]):
    """ort.InferenceSession, its pybind11 errors sorted into BundleError (the model) and ProviderError."""
    names = [n for n, _ in chosen]
    try:
        return ort.InferenceSession(str(source), sess_options=so, providers=names,
                                    provider_options=[opts for _, opts in chosen], disabled_optimizers=disabled)
    except Exception as exc:  # ORT raises pybind11 classes; sort them into our two kinds
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if type(exc).__name__ in _MODEL_ERRORS or not source.is_file():
            raise BundleError(f"ONNX Runtime cannot load {name}: {message}") from None
        raise ProviderError(f"ONNX Runtime failed to start {name} with {', '.join(names)}: {message}") from None


def run_batched(session: Any, input_name: str, output_name: str, x: np.ndarray, fixed_batch: Optional[int],
                what: str = "graph") -> np.ndarray:
    """Run an ORT session on x [N, ...] -> float32 [N, ...]: all at once, or for a fixed-batch graph in chunks
    of `fixed_batch` with the last one padded (zeros; "" for string inputs) and the padding dropped.
    An ORT failure is raised as an EdgeclipError naming `what`."""
    step = fixed_batch or len(x)
    outs = []
    for start in range(0, len(x), step):
        chunk = x[start : start + step]
        n = len(chunk)
        if fixed_batch is not None and n < step:
            fill = "" if chunk.dtype == object else 0
            chunk = np.concatenate([chunk, np.full((step - n,) + chunk.shape[1:], fill, dtype=chunk.dtype)])
        try:
            out = session.run([output_name], {input_name: chunk})[0]
        except Exception as exc:  # ORT's pybind errors: report which graph and why, not a deep traceback
            raise EdgeclipError(f"{what} failed in ONNX Runtime: {str(exc).strip()[:300]}") from None
        outs.append(np.asarray(out[:n], dtype=np.float32))
    return np.concatenate(outs)


__all__ = ["create_session", "disabled_optimizers", "run_batched"]
