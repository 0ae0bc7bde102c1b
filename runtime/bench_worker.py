"""Child process of the benchmark: time one runner alone, so no other session's threads share its cores.

`python -m runtime.bench_worker < job.json` prints one JSON line. Two kinds of job:
- `latency`: rebuild a runner from its recipe, then per tower and batch `TimingPlan.runs` timed calls;
- `end_to_end`: JPEG decode, decode + preprocessing and `edgeclip.Encoder.encode_image` on the file, in turns.
The parent (`runtime.bench`) starts one such process per runner and round through `runtime.bench_timing.run_child`;
a runner whose recipe names another `worker` module (the build side's torch runners) runs in that module, which
calls `main` with its own factories.
"""
from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Callable, Mapping, Optional

from runtime.bench_timing import TimingPlan, time_calls, time_rotation

def _latency(job: dict, plan: TimingPlan, factories: Mapping[str, Callable]) -> dict:
    from runtime.bench_runners import failure_status, image_batch, runner_from_recipe, token_batch

    runner = runner_from_recipe(job["recipe"], factories)
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


def main(factories: Optional[Mapping[str, Callable]] = None) -> int:
    """Read the job from stdin, run it, print the result as one JSON line.

    `factories` adds runner factories (name -> callable returning a Runner) to the runtime's own: the build side
    starts its own worker module that passes its torch runners here (see `Runner.recipe`)."""
    from runtime.bench_runners import RUNNER_FACTORIES

    job = json.loads(sys.stdin.read())
    plan = TimingPlan(**job["plan"])
    known = {**RUNNER_FACTORIES, **(factories or {})}
    result = _latency(job, plan, known) if job["kind"] == "latency" else _end_to_end(job, plan)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
