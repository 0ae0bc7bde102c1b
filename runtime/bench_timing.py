"""Timing primitives for the benchmark runner: interleaved rounds so that ratios survive a noisy machine.

Each timed call is preceded by ``settle`` untimed calls of the same candidate. Without them, the thread
pool of the candidate that ran just before is still spin-waiting (ONNX Runtime's default) and steals the
cores: on this 2-core machine that doubled both S0 towers' latency (fp32 image 52 ms interleaved vs
26 ms alone) and hid the INT8 speed-up.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Hashable, Mapping

import numpy as np


@dataclass(frozen=True)
class TimingPlan:
    """How long to measure: warm-up calls, timed rounds, and a wall-clock budget per group."""

    warmup: int = 3
    rounds: int = 20
    min_rounds: int = 5
    budget_s: float = 60.0
    settle: int = 1


QUICK = TimingPlan(warmup=1, rounds=5, min_rounds=3, budget_s=15.0)
FULL = TimingPlan()


def summarize(samples_s: list[float]) -> dict:
    """Median, p90, mean, min and count of a list of durations, in milliseconds."""
    ms = np.asarray(samples_s, dtype=np.float64) * 1e3
    return {
        "median_ms": float(np.median(ms)),
        "p90_ms": float(np.percentile(ms, 90)),
        "mean_ms": float(ms.mean()),
        "min_ms": float(ms.min()),
        "n": int(ms.size),
    }


def measure_interleaved(
    candidates: Mapping[Hashable, Callable[[], object]], plan: TimingPlan
) -> tuple[dict[Hashable, list[float]], dict[Hashable, str]]:
    """Time every candidate once per round (after ``plan.settle`` untimed calls), rotating the order each round.

    Returns (durations in seconds per key, error message per key that raised).
    A candidate that raises is dropped from later rounds; the others go on.
    """
    live = dict(candidates)
    errors: dict[Hashable, str] = {}
    samples: dict[Hashable, list[float]] = {k: [] for k in live}

    def call(key: Hashable) -> float | None:
        try:
            t0 = time.perf_counter()
            live[key]()
            return time.perf_counter() - t0
        except Exception as exc:  # a provider can fail at run time (unsupported op, shape)
            errors[key] = f"{type(exc).__name__}: {exc}"[:500]
            del live[key]
            return None

    for _ in range(plan.warmup):
        for key in list(live):
            call(key)
    start = time.perf_counter()
    for r in range(plan.rounds):
        keys = list(live)
        if not keys:
            break
        shift = r % len(keys)
        for key in keys[shift:] + keys[:shift]:
            for _ in range(plan.settle):
                if key in live:
                    call(key)
            if key in live:
                dt = call(key)
                if dt is not None:
                    samples[key].append(dt)
        if r + 1 >= plan.min_rounds and time.perf_counter() - start > plan.budget_s:
            break
    return {k: v for k, v in samples.items() if v and k not in errors}, errors
