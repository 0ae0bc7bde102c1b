"""The quantizer's ONNX Runtime session: CPU provider, fixed thread count, quiet log."""

from __future__ import annotations

import os

import onnxruntime as ort


def make_session(path: str | os.PathLike, threads: int = 1) -> ort.InferenceSession:
    """A CPU-EP session with a fixed thread count (1 for correctness work, 2 for the latency ratio)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
