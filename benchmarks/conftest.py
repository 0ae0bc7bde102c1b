"""Shared fixtures of the pytest-benchmark suite: cached bundles and runners, and the report every run writes.

Run: `python -m pytest -m bench benchmarks/` (add `-k s0` etc. to pick models). The report goes to
$EDGECLIP_BENCH_REPORT (default $EDGECLIP_HOME/bench/pytest-report/): report.json, report.md, report.png.
EDGECLIP_BENCH_QUICK=1 shortens every measurement; EDGECLIP_BENCH_THREADS sets session/torch threads.
"""
from __future__ import annotations

import os
import shlex
import time
from pathlib import Path
from typing import Optional

import pytest

from benchmarks.reference import build_bundle, cache_root, torch_runner
from export.onnx_export import ExportError
from runtime.bench import BenchConfig, machine_info
from runtime.bench_report import compute_ratios, write_report
from runtime.bench_runners import Runner, bundle_runners
from runtime.bench_timing import FULL, QUICK

THREADS: Optional[int] = int(os.environ["EDGECLIP_BENCH_THREADS"]) if os.environ.get("EDGECLIP_BENCH_THREADS") else None
CONFIG = BenchConfig(plan=QUICK if os.environ.get("EDGECLIP_BENCH_QUICK") else FULL, threads=THREADS,
                     cold_repeats=1 if os.environ.get("EDGECLIP_BENCH_QUICK") else 3)


SAME_RUN = "runtime.bench"  # rows timed by runtime.bench's alternating fresh processes inside one test


class Collector:
    """Rows gathered by the suite's tests, written as one report when the session ends."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, rows: list[dict], source: str) -> None:
        """Add rows; `source` says how they were timed (kept per row for the ratio table's `same run`)."""
        for row in rows:
            self.rows.append(row if source == SAME_RUN else {**row, "measured_in": source})

    def report(self, command: str) -> dict:
        """The report dict in runtime.bench's schema."""
        return {"schema": "edgeclip-bench/1", "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "command": command, "machine": machine_info(),
                "config": {"plan": vars(CONFIG.plan), "threads": THREADS},
                "notes": ["pytest-benchmark suite: per-parameter latency rows are timed in this process, one test "
                          "after another; the ratio table uses the side-by-side test's rows (each runner alone in "
                          "fresh processes, alternating) when it ran",
                          "real architectures use random input-sensitive weights; `demo` carries trained weights"],
                "rows": self.rows, "ratios": compute_ratios(self.rows)}


@pytest.fixture(scope="session")
def collector(request):
    """The session's rows; written to the report folder at the end of the session."""
    col = Collector()
    yield col
    if col.rows:
        out = Path(os.environ.get("EDGECLIP_BENCH_REPORT", cache_root() / "pytest-report"))
        args = shlex.join(request.config.invocation_params.args)
        for path in write_report(col.report(f"python -m pytest {args}"), out):
            print(f"\nbenchmark report: {path}")


@pytest.fixture(scope="session")
def runners():
    """Cached runners: get(model, variant, provider) builds the bundle once and reuses sessions."""
    cache: dict[tuple, Runner] = {}
    failures: dict[tuple, str] = {}

    def get(model: str, variant: str, provider: str) -> Runner:
        key = (model, variant, provider)
        if key in failures:
            pytest.skip(failures[key])
        if key not in cache:
            try:
                if variant == "torch-fp32":
                    cache[key] = torch_runner(model, threads=THREADS)
                else:
                    cache[key] = bundle_runners(build_bundle(model, variant), [provider], THREADS)[0]
            except (NotImplementedError, ExportError) as exc:  # a precision the exporter does not offer or refuses
                failures[key] = f"{model} {variant}: {exc}"
                pytest.skip(failures[key])
        return cache[key]

    return get
