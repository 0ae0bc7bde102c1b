"""Timing primitives of the benchmark: every runner is timed alone in a fresh process, processes alternating.

Why processes: ONNX Runtime's worker threads spin-wait after a run. With two sessions in one process, the idle
one's spinning threads took the cores from the one being timed; on this 2-core machine that doubled S0's fp32
image latency (52 ms interleaved vs 26 ms alone) and hid most of the INT8 speed-up. A process per runner has no
such neighbour; alternating the processes of all runners `processes` times makes slow drifts of the machine's
load hit every runner alike, so ratios inside one report still hold on a noisy machine.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable, Mapping, Optional

import numpy as np

_ROOT = str(Path(__file__).resolve().parents[1])


@dataclass(frozen=True)
class TimingPlan:
    """How long to measure: per process, `warmup` untimed calls then up to `runs` timed calls (at least
    `min_runs`, fewer once `budget_s` is spent); `processes` fresh processes per runner, alternating."""

    warmup: int = 3
    runs: int = 7
    min_runs: int = 3
    processes: int = 3
    budget_s: float = 20.0


QUICK = TimingPlan(warmup=1, runs=5, min_runs=2, processes=1, budget_s=5.0)
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


def time_calls(fn: Callable[[], object], plan: TimingPlan) -> list[float]:
    """Durations in seconds of back-to-back calls of `fn` after `plan.warmup` untimed ones (one process's share)."""
    return time_rotation({"fn": fn}, plan)["fn"]


def time_rotation(calls: Mapping[str, Callable[[], object]], plan: TimingPlan) -> dict[str, list[float]]:
    """Like `time_calls` for several callables taking turns (a, b, c, a, b, c, ...), warm-up included, so
    all of them run in the same warmed-up state of the process (allocator, caches, clock)."""
    for _ in range(plan.warmup):
        for fn in calls.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    start = time.perf_counter()
    for i in range(plan.runs):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
        if i + 1 >= plan.min_runs and time.perf_counter() - start > plan.budget_s:
            break
    return times


def alternate(
    jobs: Mapping[Hashable, object],
    run_one: Callable[[object], dict],
    processes: int,
    on_done: Optional[Callable[[Hashable], None]] = None,
) -> dict[Hashable, list[dict]]:
    """Run every job `processes` times, one at a time, rotating the order each round; results per key.

    `run_one` starts one fresh process for a job and returns its result; an exception it raises is stored as
    {"crashed": message} for that round, and the other jobs go on.
    """
    keys = list(jobs)
    results: dict[Hashable, list[dict]] = {k: [] for k in keys}
    for r in range(max(1, processes)):
        shift = r % len(keys) if keys else 0
        for key in keys[shift:] + keys[:shift]:
            try:
                results[key].append(run_one(jobs[key]))
            except Exception as exc:  # a child that crashed (e.g. a provider segfault) is a result, not the end
                results[key].append({"crashed": f"{type(exc).__name__}: {exc}"[:500]})
            if on_done:
                on_done(key)
    return results


def run_child(module: str, args: list[str], payload: Optional[dict] = None, timeout: float = 3600) -> Any:
    """Run `python -m module args...` (job JSON on stdin) with this checkout importable; its last stdout line as JSON.

    Raises RuntimeError with the child's last error line, or the signal that killed it (a provider can segfault).
    """
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-m", module, *args], input=json.dumps(payload) if payload else None,
                          capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode < 0:
        raise RuntimeError(f"the process was killed by {signal.Signals(-proc.returncode).name}")
    if proc.returncode != 0:
        raise RuntimeError((proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1][:500])
    return json.loads(proc.stdout.strip().splitlines()[-1])
