"""Pre-optimized graphs (runtime.graph_cache): a session loaded from the cache gives the same outputs as one built
from the bundle's graph, and a damaged, truncated or refused cache entry is never used: it is built again."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from edgeclip.bundle.verify_cache import cached_sha256
from edgeclip import file_cache
from runtime import graph_cache
from runtime.session import create_session

from damage import flip_a_byte_keeping_size_and_mtime

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


def entries() -> list:
    """The entry folders of the cache."""
    folder = graph_cache.cache_dir()
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []


def only_entry():
    """(graph.onnx, graph.data, entry.json) of the one entry the cache must hold."""
    found = entries()
    assert len(found) == 1, found
    entry = found[0]
    return entry / graph_cache.GRAPH, entry / graph_cache.DATA, entry / file_cache.RECORD


@pytest.mark.parametrize("tower", ["image", "text"])
def test_cached_graph_gives_the_outputs_of_the_bundle_graph(bundles, home, tower):
    path = bundles["dynamic"] / f"{tower}.onnx"
    plain = run(path, tower, cache=False)
    assert not graph_cache.cache_dir().exists()  # cache=False writes nothing
    first = run(path, tower, cache=True)  # builds the entry
    graph, data, record = only_entry()
    saved = graph.stat().st_mtime_ns
    second = run(path, tower, cache=True)  # loads it with optimizations off
    assert graph.stat().st_mtime_ns == saved, "the entry was rebuilt instead of loaded"
    np.testing.assert_array_equal(first, plain)
    np.testing.assert_array_equal(second, plain)
    meta = json.loads(record.read_text())
    assert meta["files"] == {p.name: cached_sha256(p) for p in (graph, data)}  # weights saved apart, in graph.data
    assert meta["key"].split("\n")[0] == cached_sha256(path)


DAMAGE = {
    "graph: a byte flipped": lambda graph, data, record: flip_a_byte_keeping_size_and_mtime(graph),
    "weights: a byte flipped": lambda graph, data, record: flip_a_byte_keeping_size_and_mtime(data),
    "weights truncated": lambda graph, data, record: data.write_bytes(data.read_bytes()[:100]),
    "graph empty": lambda graph, data, record: graph.write_bytes(b""),
    "weights missing": lambda graph, data, record: data.unlink(),
    "graph missing": lambda graph, data, record: graph.unlink(),
    "record not JSON": lambda graph, data, record: record.write_text("{not json"),
    "record of another shape": lambda graph, data, record: record.write_text(json.dumps(
        {**json.loads(record.read_text()), "files": ["graph.onnx"]})),
    "record missing": lambda graph, data, record: record.unlink(),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_entry_is_detected_and_built_again(bundles, home, damage):
    path = bundles["dynamic"] / "image.onnx"
    plain = run(path, "image", cache=False)
    run(path, "image", cache=True)
    DAMAGE[damage](*only_entry())
    np.testing.assert_array_equal(run(path, "image", cache=True), plain)
    graph, data, record = only_entry()
    assert json.loads(record.read_text())["files"] == {p.name: cached_sha256(p) for p in (graph, data)}  # sound again
    np.testing.assert_array_equal(run(path, "image", cache=True), plain)


def test_an_entry_onnxruntime_refuses_is_built_again(bundles, home):
    """Files whose digests match the record (as if written by another onnxruntime) that do not load."""
    path = bundles["dynamic"] / "image.onnx"
    plain = run(path, "image", cache=False)
    run(path, "image", cache=True)
    graph, data, record = only_entry()
    graph.write_bytes(b"not an onnx graph")
    meta = json.loads(record.read_text())
    record.write_text(json.dumps({**meta, "files": {**meta["files"], graph.name: cached_sha256(graph)}}))
    np.testing.assert_array_equal(run(path, "image", cache=True), plain)
    graph, _, _ = only_entry()
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
    assert len(entries()) == 2


@pytest.mark.parametrize("limit", ["MAX_ENTRIES", "MAX_BYTES"])
def test_old_entries_and_stale_temp_folders_are_pruned(bundles, home, monkeypatch, limit):
    monkeypatch.setattr(graph_cache, limit, 1)  # one entry, or one byte: the newest entry is kept either way
    run(bundles["dynamic"] / "image.onnx", "image", cache=True)
    _, _, older = only_entry()
    os.utime(older, (1, 1))  # used long ago
    stale, fresh = graph_cache.cache_dir() / ".x.1234.tmp", graph_cache.cache_dir() / ".y.5678.tmp"
    stale.mkdir()
    fresh.mkdir()  # another process may be writing it now
    os.utime(stale, (1, 1))
    run(bundles["dynamic"] / "text.onnx", "text", cache=True)
    _, _, record = only_entry()
    assert json.loads(record.read_text())["key"].split("\n")[0] == cached_sha256(bundles["dynamic"] / "text.onnx")
    assert not stale.exists() and fresh.exists()
