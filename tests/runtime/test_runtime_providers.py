"""Provider policy (pure, with injected provider lists) and sessions on the real onnxruntime build."""
from __future__ import annotations

import logging

import numpy as np
import onnxruntime as ort
import pytest

from edgeclip import Encoder
from edgeclip.errors import BundleError, ProviderError
from runtime.providers import (
    CPU, NNAPI, XNNPACK, ort_name, resolve_providers, session_threads, short_name,
)
from runtime.session import create_session

ALL = [NNAPI, XNNPACK, CPU]  # e.g. Termux's python-onnxruntime


def names(resolved):
    return [n for n, _ in resolved]


@pytest.mark.parametrize("available, fixed, expected", [
    (ALL, True, [NNAPI, XNNPACK, CPU]),
    (ALL, False, [XNNPACK, CPU]),
    ([XNNPACK, CPU], True, [XNNPACK, CPU]),
    ([NNAPI, CPU], True, [NNAPI, CPU]),
    ([NNAPI, CPU], False, [CPU]),
    ([CPU], True, [CPU]),
    (["AzureExecutionProvider", CPU], True, [CPU]),
])
def test_auto_priority(available, fixed, expected):
    assert names(resolve_providers("auto", available=available, fixed_shape=fixed)) == expected


def test_auto_logs_choice_and_nnapi_skip(caplog):
    with caplog.at_level(logging.INFO, logger="edgeclip"):
        resolve_providers("auto", available=ALL, fixed_shape=False)
    text = caplog.text
    assert "NNAPI skipped" in text and "dynamic shapes" in text
    assert "chose xnnpack, cpu" in text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="edgeclip"):
        resolve_providers("auto", available=[CPU])
    assert "chose cpu" in caplog.text and "not in this build: nnapi, xnnpack" in caplog.text


def test_explicit_nnapi_on_dynamic_graph_warns_and_falls_back(caplog):
    with caplog.at_level(logging.WARNING, logger="edgeclip"):
        assert names(resolve_providers("nnapi", available=ALL, fixed_shape=False)) == [CPU]
    assert "NNAPI skipped" in caplog.text


@pytest.mark.parametrize("request_, expected", [
    ("cpu", [CPU]), ("XNNPACK", [XNNPACK, CPU]), (NNAPI, [NNAPI, CPU]),
    (["xnnpack", "nnapi"], [XNNPACK, NNAPI, CPU]), (["cpu", "xnnpack"], [CPU, XNNPACK]), (None, ALL),
])
def test_explicit_requests_keep_order(request_, expected):
    assert names(resolve_providers(request_, available=ALL, fixed_shape=True)) == expected


def test_absent_provider_lists_available_ones():
    with pytest.raises(ProviderError, match=r"'xnnpack' is not available.*available: cpu \(CPUExecutionProvider\)"):
        resolve_providers("xnnpack", available=[CPU])


@pytest.mark.parametrize("bad", ["gpu-please", "", [], [""], 3])
def test_unknown_or_empty_names(bad):
    with pytest.raises(ProviderError):
        resolve_providers(bad, available=ALL)


def test_name_mapping_round_trips():
    for short in ("cpu", "xnnpack", "nnapi"):
        assert short_name(ort_name(short)) == short
    assert ort_name("CUDAExecutionProvider") == "CUDAExecutionProvider"


def test_xnnpack_gets_its_own_pool_and_cpu_one_thread():
    resolved = dict(resolve_providers("xnnpack", available=ALL, threads=3))
    assert resolved[XNNPACK] == {"intra_op_num_threads": "3"} and resolved[CPU] == {}
    assert int(dict(resolve_providers("auto", available=ALL))[XNNPACK]["intra_op_num_threads"]) >= 1
    assert session_threads([XNNPACK, CPU], 3) == (1, {"session.intra_op.allow_spinning": "0"})
    assert session_threads([CPU], 3) == (3, {"session.intra_op.allow_spinning": "0"})
    assert session_threads([CPU], None) == (0, {"session.intra_op.allow_spinning": "0"})


# --- the real onnxruntime build -------------------------------------------------------------

def test_real_available_providers_resolve():
    available = ort.get_available_providers()
    resolved = names(resolve_providers("auto"))
    assert resolved[-1] == CPU and set(resolved) <= set(available)
    wanted = [p for p in (NNAPI, XNNPACK) if p in available]
    assert resolved[:-1] == wanted


def test_real_session_runs_with_what_it_reports(bundles):
    session, used = create_session(bundles["dynamic"] / "image.onnx", providers="auto", threads=1)
    assert used == session.get_providers() and CPU in used
    out = session.run(None, {"image": np.zeros((2, 3, 32, 32), np.float32)})[0]
    assert out.shape == (2, 16)


def test_real_missing_provider_is_a_clear_error(bundles):
    absent = next((p for p in ("nnapi", "xnnpack") if ort_name(p) not in ort.get_available_providers()), None)
    if absent is None:
        pytest.skip("this onnxruntime build has both NNAPI and XNNPACK, so none is missing")
    with pytest.raises(ProviderError, match=f"'{absent}' is not available.*available:"):
        Encoder(bundles["dynamic"], providers=absent)


def test_non_onnx_file_is_a_bundle_error(tmp_path):
    (tmp_path / "x.onnx").write_bytes(b"not a model")
    with pytest.raises(BundleError, match="cannot load x.onnx"):
        create_session(tmp_path / "x.onnx", providers="cpu")


@pytest.mark.parametrize("threads", [0, -1, 1.5, True])
def test_bad_thread_counts(bundles, threads):
    with pytest.raises(ProviderError, match="threads"):
        create_session(bundles["dynamic"] / "image.onnx", threads=threads)
