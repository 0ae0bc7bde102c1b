"""Run ONNX towers and compare them: embeddings, fidelity metrics, same-run latency ratios."""

from __future__ import annotations

import os
import statistics
import tempfile
from typing import Iterable

import numpy as np
import onnxruntime as ort

from edgeclip.zeroshot import l2_normalize
from runtime.bench_timing import alternate, run_child

LATENCY_ROUNDS = 3  # fp32/int8 process pairs per latency ratio


def embed(session: ort.InferenceSession, feeds: Iterable[dict[str, np.ndarray]]) -> np.ndarray:
    """Concatenate the first output over all feeds (unnormalized embeddings, float64 for metrics)."""
    outs = [session.run(None, feed)[0] for feed in feeds]
    return np.concatenate(outs).astype(np.float64)


def fidelity(ref: np.ndarray, test: np.ndarray) -> dict[str, float]:
    """INT8-vs-fp32 agreement: row cosines (mean/min), centered cosines, centered SQNR in dB.

    Centered means each side minus its own mean over the set: it keeps only the input-dependent
    part, which a model that maps everything to one direction would otherwise hide.
    """
    cos = np.sum(_unit(ref) * _unit(test), axis=1)
    rc, tc = ref - ref.mean(0), test - test.mean(0)
    ccos = np.sum(_unit(rc) * _unit(tc), axis=1)
    noise = float(np.sum((rc - tc) ** 2))
    sqnr = 10 * np.log10(float(np.sum(rc ** 2)) / noise) if noise > 0 else float("inf")
    return {"mean_cos": float(cos.mean()), "min_cos": float(cos.min()), "centered_mean_cos": float(ccos.mean()),
            "centered_min_cos": float(ccos.min()), "centered_sqnr_db": float(sqnr), "n": int(len(cos))}


def _unit(x: np.ndarray) -> np.ndarray:
    return l2_normalize(x, np.float64)


def input_sensitivity(emb: np.ndarray) -> float:
    """Smallest fraction of an embedding's norm left after subtracting the set's mean embedding."""
    return float(np.min(np.linalg.norm(emb - emb.mean(0), axis=1) / np.maximum(np.linalg.norm(emb, axis=1), 1e-12)))


def latency_ratio(fp32_path: str | os.PathLike, int8_path: str | os.PathLike, feed: dict[str, np.ndarray],
                  threads: int = 2, runs: int = 30, warmup: int = 5, rounds: int = LATENCY_ROUNDS) -> dict[str, float]:
    """Median latency of both graphs, each timed alone in a fresh process, fp32 and int8 processes alternating.

    One process per graph because ONNX Runtime's worker threads spin-wait after a run: with both sessions in
    one process the idle one's spinning threads slowed the other (S0 text INT8 14.5 ms instead of 9.0 ms alone).
    Alternating `rounds` times makes slow drifts of the machine's load hit both graphs alike.
    """
    with tempfile.TemporaryDirectory(prefix="edgeclip-latency-") as tmp:
        feed_path = os.path.join(tmp, "feed.npz")
        np.savez(feed_path, **feed)
        per_round = max(1, runs // rounds)
        jobs = {name: [str(path), feed_path, str(threads), str(per_round), str(warmup)]
                for name, path in (("fp32", fp32_path), ("int8", int8_path))}
        results = alternate(jobs, lambda args: {"times": run_child("quantize.latency_probe", args)}, rounds)
    times = {}
    for name, got in results.items():
        crashed = next((r["crashed"] for r in got if "crashed" in r), None)
        if crashed:
            raise RuntimeError(f"timing {jobs[name][0]} failed: {crashed}")
        times[name] = [t for r in got for t in r["times"]]
    fp32_ms = 1000 * statistics.median(times["fp32"])
    int8_ms = 1000 * statistics.median(times["int8"])
    return {"fp32_ms": fp32_ms, "int8_ms": int8_ms, "speedup": fp32_ms / int8_ms, "threads": threads,
            "batch": int(next(iter(feed.values())).shape[0]), "runs": per_round * rounds}


def recall_at_1(image: np.ndarray, text: np.ndarray) -> dict[str, float]:
    """Image->caption and caption->image R@1 where row i of each side belongs together."""
    sim = _unit(image) @ _unit(text).T
    idx = np.arange(len(sim))
    return {"image_to_text": float(np.mean(sim.argmax(1) == idx)), "text_to_image": float(np.mean(sim.argmax(0) == idx))}


def neighbour_overlap(image: np.ndarray, text: np.ndarray, teacher_image: np.ndarray, teacher_text: np.ndarray,
                      k: int = 5) -> float:
    """Mean overlap of each image's top-k caption neighbours under the student and under the teacher."""
    k = min(k, text.shape[0])
    s = np.argsort(-(_unit(image) @ _unit(text).T), axis=1)[:, :k]
    t = np.argsort(-(_unit(teacher_image) @ _unit(teacher_text).T), axis=1)[:, :k]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(s, t)]))
