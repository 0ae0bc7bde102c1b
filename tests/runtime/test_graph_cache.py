"""Pre-optimized graphs (runtime.graph_cache): a session loaded from the cache gives the same outputs as one built
from the bundle's graph, and a damaged, truncated or refused cache entry is never used: it is built again."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from edgeclip.bundle.verify_cache import cached_sha256
from runtime import graph_cache
from runtime.session import create_session

rng = np.random.default_rng(0)
INPUTS = {"image": rng.random((3, 3, 32, 32), dtype=np.float32),
          "text": rng.integers(0, 49408, (3, 77)).astype(np.int64)}


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A private, empty $EDGECLIP_HOME."""
    monkeypatch.setenv("EDGECLIP_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def run(path, tower: str, cache: bool) -> np.ndarray:
    session, providers = create_session(path, "cpu", threads=1, cache=cache)
    assert providers == ["CPUExecutionProvider"]
    return session.run(None, {session.get_inputs()[0].name: INPUTS[tower]})[0]


def entries() -> dict[str, list]:
    """suffix -> files of the cache folder."""
    files = sorted(graph_cache.cache_dir().iterdir()) if graph_cache.cache_dir().is_dir() else []
    return {suffix: [p for p in files if p.suffix == suffix] for suffix in (".onnx", ".json")}


def only_entry():
    found = entries()
    assert len(found[".onnx"]) == 1 and len(found[".json"]) == 1, found
    return found[".onnx"][0], found[".json"][0]


@pytest.mark.parametrize("tower", ["image", "text"])
def test_cached_graph_gives_the_outputs_of_the_bundle_graph(bundles, home, tower):
    path = bundles["dynamic"] / f"{tower}.onnx"
    plain = run(path, tower, cache=False)
    assert not graph_cache.cache_dir().exists()  # cache=False writes nothing
    first = run(path, tower, cache=True)  # builds the entry
    graph, record = only_entry()
    saved = graph.stat().st_mtime_ns
    second = run(path, tower, cache=True)  # loads it with optimizations off
    assert graph.stat().st_mtime_ns == saved, "the entry was rebuilt instead of loaded"
    np.testing.assert_array_equal(first, plain)
    np.testing.assert_array_equal(second, plain)
    meta = json.loads(record.read_text())
    assert meta["sha256"] == cached_sha256(graph) and meta["key"].split("\n")[1] == cached_sha256(path)


def _damage_keeping_size_and_mtime(path) -> None:
    st = os.stat(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "empty", "garbage record", "record missing",
                                    "graph missing"])
def test_a_damaged_entry_is_detected_and_built_again(bundles, home, damage):
    path = bundles["dynamic"] / "image.onnx"
    plain = run(path, "image", cache=False)
    run(path, "image", cache=True)
    graph, record = only_entry()
    if damage == "flip a byte":
        _damage_keeping_size_and_mtime(graph)
    elif damage == "truncate":
        graph.write_bytes(graph.read_bytes()[:100])
    elif damage == "empty":
        graph.write_bytes(b"")
    elif damage == "garbage record":
        record.write_text("{not json")
    elif damage == "record missing":
        record.unlink()
    else:
        graph.unlink()
    np.testing.assert_array_equal(run(path, "image", cache=True), plain)
    graph, record = only_entry()
    assert json.loads(record.read_text())["sha256"] == cached_sha256(graph)  # a sound entry again
    np.testing.assert_array_equal(run(path, "image", cache=True), plain)


def test_an_entry_onnxruntime_refuses_is_built_again(bundles, home):
    """A file whose digest matches its record (as if written by another onnxruntime) yet does not load."""
    path = bundles["dynamic"] / "image.onnx"
    plain = run(path, "image", cache=False)
    run(path, "image", cache=True)
    graph, record = only_entry()
    graph.write_bytes(b"not an onnx graph")
    meta = json.loads(record.read_text())
    record.write_text(json.dumps({**meta, "sha256": cached_sha256(graph)}))
    np.testing.assert_array_equal(run(path, "image", cache=True), plain)
    graph, _ = only_entry()
    assert graph.read_bytes() != b"not an onnx graph"


def test_an_unwritable_home_still_gives_a_session(bundles, tmp_path, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("EDGECLIP_HOME", str(tmp_path / "file"))
    path = bundles["dynamic"] / "image.onnx"
    np.testing.assert_array_equal(run(path, "image", cache=True), run(path, "image", cache=False))


def test_entries_are_apart_per_graph_and_setting(bundles, home):
    image, text = bundles["dynamic"] / "image.onnx", bundles["dynamic"] / "text.onnx"
    keys = {graph_cache.entry_key(cached_sha256(image), ["CPUExecutionProvider"], []),
            graph_cache.entry_key(cached_sha256(text), ["CPUExecutionProvider"], []),
            graph_cache.entry_key(cached_sha256(image), ["CPUExecutionProvider"], ["NchwcTransformer"]),
            graph_cache.entry_key(cached_sha256(image), ["XnnpackExecutionProvider", "CPUExecutionProvider"], [])}
    assert len(keys) == 4
    run(image, "image", cache=True)
    run(text, "text", cache=True)
    assert len(entries()[".onnx"]) == 2


def test_old_entries_are_pruned(bundles, home, monkeypatch):
    monkeypatch.setattr(graph_cache, "MAX_ENTRIES", 1)
    run(bundles["dynamic"] / "image.onnx", "image", cache=True)
    _, older = only_entry()
    os.utime(older, (1, 1))  # used long ago
    run(bundles["dynamic"] / "text.onnx", "text", cache=True)
    graph, record = only_entry()
    assert json.loads(record.read_text())["key"].split("\n")[1] == cached_sha256(bundles["dynamic"] / "text.onnx")
