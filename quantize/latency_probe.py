"""Time one ONNX graph alone in this process: `python -m quantize.latency_probe GRAPH FEED.npz THREADS RUNS WARMUP`.

Prints the per-run durations in seconds as a JSON list. `quantize.measure.latency_ratio` starts one probe per
graph, so no other session's spin-waiting worker threads share the process with the one being timed.
"""
from __future__ import annotations

import json
import sys

import numpy as np

from quantize.session import make_session
from runtime.bench_timing import TimingPlan, time_calls


def time_graph(graph: str, feed_path: str, threads: int, runs: int, warmup: int) -> list[float]:
    """Durations of `runs` back-to-back runs after `warmup` untimed ones."""
    session = make_session(graph, threads)
    with np.load(feed_path) as data:
        feed = {k: data[k] for k in data.files}
    plan = TimingPlan(warmup=warmup, runs=runs, min_runs=runs, processes=1, budget_s=float("inf"))
    return time_calls(lambda: session.run(None, feed), plan)


if __name__ == "__main__":
    graph, feed_path, threads, runs, warmup = sys.argv[1:6]
    print(json.dumps(time_graph(graph, feed_path, int(threads), int(runs), int(warmup))))
