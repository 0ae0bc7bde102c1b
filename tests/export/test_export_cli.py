"""`python -m export --help / --list` and usage errors."""
from __future__ import annotations

import json

import pytest

from export.cli import main
from export.registry import MODELS


def test_help_explains_options(capsys):
    try:
        main(["--help"])
    except SystemExit as exc:
        assert exc.code == 0
    out = capsys.readouterr().out
    for opt in ("--model", "--checkpoint", "--out", "--nnapi", "--batch", "--gelu", "--opset", "--precision", "--list",
                "--json"):
        assert opt in out
    assert "EDGECLIP_HOME" in out and "NNAPI" in out


def test_list_shows_every_model_with_sizes(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    for model_id in MODELS:
        assert model_id in out
    assert "11.4 + 42.4" in out  # S0's published image + text parameter counts
    assert main(["--list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["model_id"] for r in rows} == set(MODELS)


def test_usage_errors_exit_2(capsys):
    assert main(["--model", "s0"]) == 2
    assert main(["--model", "nope", "--out", "x"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
    try:
        main(["--model", "s0", "--out", "x", "--batch", "zero"])
    except SystemExit as exc:
        assert exc.code == 2


def test_nnapi_with_options_it_cannot_run_is_a_usage_error(capsys, tmp_path):
    pytest.importorskip("torch", reason="the build side needs torch, timm and open_clip (pip install -e '.[export]')")
    out = tmp_path / "b"
    assert main(["--model", "s0", "--out", str(out), "--nnapi", "--batch", "dynamic"]) == 2
    assert "NNAPI needs a fixed batch" in capsys.readouterr().err
    assert main(["--model", "s0", "--out", str(out), "--nnapi", "--gelu", "exact", "--opset", "17"]) == 2
    err = capsys.readouterr().err
    assert "Erf" in err and "LayerNormalization" in err
    assert not out.exists()
