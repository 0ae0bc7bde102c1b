"""Child process of the benchmark: time one runner alone, so no other session's threads share its cores.

`python -m runtime.bench_worker < job.json` prints one JSON line. Two kinds of job:
- `latency`: rebuild a runner from its recipe, then per tower and batch `TimingPlan.runs` timed calls;
- `end_to_end`: JPEG decode, decode + preprocessing and `edgeclip.Encoder.encode_image` on the file, in turns.
The parent (`runtime.bench`) starts one such process per runner and round through `run_child`.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

from runtime.bench_timing import TimingPlan, time_calls, time_rotation

_ROOT = str(Path(__file__).resolve().parents[1])


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


def _latency(job: dict, plan: TimingPlan) -> dict:
    from runtime.bench_runners import failure_status, image_batch, runner_from_recipe, token_batch

    runner = runner_from_recipe(job["recipe"])
    out = {}
    for tower, batches in job["towers"].items():
        try:
            fn = runner.tower(tower)
            make = (lambda b: image_batch(runner.image_size, b)) if tower == "image" else \
                (lambda b: token_batch(runner.context_length, b))
            samples = {}
            for batch in batches:
                x = make(batch)
                samples[str(batch)] = time_calls(lambda: fn(x), plan)
            out[tower] = {"status": "ok", "samples": samples}
        except Exception as exc:  # a provider refusing the graph or failing at run time is a result
            status, reason = failure_status(exc)
            out[tower] = {"status": status, "reason": reason}
        finally:
            runner.release(tower)
    return {"towers": out}


def _end_to_end(job: dict, plan: TimingPlan) -> dict:
    from edgeclip import Encoder
    from edgeclip.bundle import load_bundle
    from edgeclip.preprocess import load_image, preprocess_image
    from runtime.bench_runners import failure_status

    image = Path(job["image"])
    spec = load_bundle(job["bundle"], verify=False).preprocess
    calls = {"decode": lambda: load_image(image), "preprocess": lambda: preprocess_image(image, spec)}
    try:
        enc = Encoder(job["bundle"], providers=[job["provider"]], threads=job.get("threads"))
    except Exception as exc:
        return dict(zip(("status", "reason"), failure_status(exc)))
    calls["encode"] = lambda: enc.encode_image([image])
    # Taking turns: timed one after another, the first calls of a fresh process paid for its cold allocator
    # (decode alone measured slower than decode + preprocessing, which includes it).
    return {"status": "ok", **time_rotation(calls, replace(plan, warmup=max(plan.warmup, 5)))}


def main() -> int:
    """Read the job from stdin, run it, print the result as one JSON line."""
    job = json.loads(sys.stdin.read())
    plan = TimingPlan(**job["plan"])
    result = _latency(job, plan) if job["kind"] == "latency" else _end_to_end(job, plan)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
