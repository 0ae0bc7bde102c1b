"""Absurd or non-positive thread counts are refused, in the API and in every command with --threads."""
from __future__ import annotations

import importlib
import os

import pytest

from edgeclip import Encoder
from edgeclip.errors import EdgeclipError
from runtime.providers import max_threads

ABSURD = [0, -1, 100000, 10**9]


def test_the_bound_is_tied_to_the_cpu_count():
    assert max_threads() == min(256, 4 * (os.cpu_count() or 1))


@pytest.mark.parametrize("threads", ABSURD + [max_threads() + 1, 2.0, "4", True])
def test_encoder_refuses(tiny, threads):
    with pytest.raises(EdgeclipError, match="threads") as err:
        Encoder(tiny, providers="cpu", threads=threads)
    assert repr(threads) in str(err.value) or str(threads) in str(err.value)


def test_encoder_accepts_the_bound(tiny):
    assert Encoder(tiny, providers="cpu", threads=max_threads()).encode_text("x").shape == (1, 16)


@pytest.mark.parametrize("value", ["0", "-3", "100000", "many"])
@pytest.mark.parametrize("command", ["edgeclip.cli", "runtime.bench", "runtime.bench_photos", "export.train_demo",
                                     "benchmarks.side_by_side", "benchmarks.demo_pipeline"])
def test_every_threads_option_refuses(tiny, tmp_path, capsys, command, value):
    if command in ("export.train_demo", "benchmarks.side_by_side", "benchmarks.demo_pipeline"):
        pytest.importorskip("torch", reason=f"{command} runs torch (the export extra)")
    main = importlib.import_module(command).main
    argv = {"edgeclip.cli": ["--threads", value, "info", str(tiny)],
            "runtime.bench": ["--bundle", str(tiny), "--report", str(tmp_path / "r"), "--threads", value, "--quick"],
            }.get(command, ["--threads", value])
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--threads" in err and value in err
    assert not (tmp_path / "r").exists()
