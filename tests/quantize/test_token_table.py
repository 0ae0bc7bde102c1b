"""Token tables stored INT8 per row (or fp16): bounded error, no float table left, real bundles run them."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from quantize_fixtures import EMBED, make_image_tower  # skips without onnx

import onnx
from onnx import TensorProto, helper, numpy_helper

from quantize.token_table import compress_token_tables, token_table_nodes
from quantize.weight_storage import fp16_weights

V, C, T = 1200, 24, 6  # rows, width, tokens per sequence


def _lookup_model(rng) -> tuple[onnx.ModelProto, np.ndarray]:
    """ids -> Gather(table) -> output: rows with very different magnitudes, as a vocabulary has."""
    table = (rng.standard_normal((V, C)) * rng.uniform(0.01, 5.0, (V, 1))).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["rows"], name="lookup")], "lookup",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", T])],
        [helper.make_tensor_value_info("rows", TensorProto.FLOAT, ["batch", T, C])],
        [numpy_helper.from_array(table, "table")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), table


def _run(model: onnx.ModelProto, ids: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"ids": ids})[0]


def test_int8_rows_stay_within_half_a_row_scale_and_no_float_table_is_left():
    rng = np.random.default_rng(0)
    model, table = _lookup_model(rng)
    ids = rng.integers(0, V, (4, T)).astype(np.int64)
    ref = _run(model, ids)
    model, records = compress_token_tables(model, "int8")
    onnx.checker.check_model(model)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert not any(a.dtype == np.float32 and a.size >= V * C for a in inits.values()), "float table still stored"
    q = next(a for a in inits.values() if a.dtype == np.int8)
    scale = next(a for a in inits.values() if a.dtype == np.float32 and a.shape == (V, 1))
    assert q.shape == (V, C) and np.all(np.abs(q) <= 127)
    got = _run(model, ids)
    bound = scale[ids] / 2 * (1 + 1e-5) + 1e-7  # rounding to the row's grid: at most half a step
    assert np.all(np.abs(got - ref) <= bound)
    assert not token_table_nodes(model), "the rewritten graph has no float table lookup left"
    assert records[0]["stored_bytes"] == q.nbytes + scale.nbytes and records[0]["float_bytes"] == table.nbytes


@pytest.mark.parametrize("storage", ["int8", "fp16"])
def test_after_ort_optimizes_the_graph_only_a_gather_reads_the_table(tmp_path, storage):
    """ORT must not fold a Cast/Mul into the table itself, which would rebuild the float table at load."""
    model, _ = compress_token_tables(_lookup_model(np.random.default_rng(3))[0], storage)
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    optimized = onnx.load(str(tmp_path / "opt.onnx"))
    tables = {t.name for t in optimized.graph.initializer if list(t.dims) == [V, C]}
    assert tables and all(t.data_type != TensorProto.FLOAT for t in optimized.graph.initializer if t.name in tables)
    readers = [n.op_type for n in optimized.graph.node if set(n.input) & tables]
    assert readers == ["Gather"]


def test_fp16_table_matches_fp16_rounding_and_fp16_weights_keep_outputs(tmp_path):
    rng = np.random.default_rng(1)
    model, table = _lookup_model(rng)
    ids = rng.integers(0, V, (2, T)).astype(np.int64)
    model, records = compress_token_tables(model, "fp16")
    np.testing.assert_array_equal(_run(model, ids), table.astype(np.float16).astype(np.float32)[ids])
    assert records[0]["storage"] == "fp16" and records[0]["stored_bytes"] == table.nbytes // 2
    with pytest.raises(ValueError, match="storage"):
        compress_token_tables(model, "int4")

    image = onnx.load(str(make_image_tower(tmp_path / "i.onnx")))
    x = {"image": rng.random((2, 3, 32, 32), dtype=np.float32)}
    before = ort.InferenceSession(image.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)[0]
    halves = {t.name: numpy_helper.to_array(t).astype(np.float16).astype(np.float32)
              for t in image.graph.initializer if t.name in ("w1", "proj")}
    image, stored = fp16_weights(image, ["fc1", "proj"])
    assert [s["node"] for s in stored] == ["fc1", "proj"]
    assert not any(t.name in halves for t in image.graph.initializer), "the float32 weights are gone"
    after = ort.InferenceSession(image.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)[0]
    rounded = onnx.load(str(tmp_path / "i.onnx"))  # the float graph with the same fp16-rounded weights
    for t in rounded.graph.initializer:
        if t.name in halves:
            t.CopyFrom(numpy_helper.from_array(halves[t.name], t.name))
    expect = ort.InferenceSession(rounded.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)[0]
    np.testing.assert_allclose(after, expect, rtol=1e-6, atol=1e-6)


def test_storage_choice_follows_the_fidelity_budget(tmp_path):
    from quantize.measure import embed
    from quantize.session import make_session
    from quantize_fixtures import make_text_tower
    from quantize.token_table import choose_table_storage

    src = make_text_tower(tmp_path / "text.onnx")
    ids = np.random.default_rng(2).integers(1, 49407, (8, 77)).astype(np.int64)
    feeds = [{"input_ids": ids[:4]}, {"input_ids": ids[4:]}]
    ref = embed(make_session(src), feeds)
    storage, records, metrics = choose_table_storage(src, tmp_path / "a.onnx", feeds, ref, -1.0, -1.0)
    assert storage == "int8" and metrics["mean_cos"] < 1.0
    storage, _, _ = choose_table_storage(src, tmp_path / "b.onnx", feeds, ref, 1.0, 1.0)  # no error allowed
    assert storage == "fp16"
    assert not token_table_nodes(onnx.load(str(tmp_path / "b.onnx")))


def test_load_bundle_and_encoder_run_an_int8_table(tmp_path):
    from edgeclip import Encoder, load_bundle
    from quantize_fixtures import make_text_tower
    from tests.toy_bundle import write_toy_bundle

    src = make_text_tower(tmp_path / "text.onnx")
    model, records = compress_token_tables(onnx.load(str(src)), "int8")
    assert records and records[0]["shape"][0] == 49408
    onnx.save(model, str(tmp_path / "text-int8.onnx"))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    q = next(a for a in inits.values() if a.dtype == np.int8)
    scale = next(a for a in inits.values() if a.dtype == np.float32 and a.shape == (q.shape[0], 1))
    dequantized = onnx.load(str(src))  # the float graph with the table the int8 rows stand for
    for t in dequantized.graph.initializer:
        if t.name == "tok":
            t.CopyFrom(numpy_helper.from_array((q * scale).astype(np.float32), "tok"))
    ref_bundle = write_toy_bundle(tmp_path / "fp32", text=dequantized, embed_dim=EMBED)
    bundle = write_toy_bundle(tmp_path / "int8", text=tmp_path / "text-int8.onnx", embed_dim=EMBED)
    assert load_bundle(bundle, verify=True).towers["text"]
    texts = ["a red circle", "two blue squares on the left", "a large green star"]
    ref = Encoder(ref_bundle, providers="cpu").encode_text(texts)
    got = Encoder(bundle, providers="cpu").encode_text(texts)
    assert got.shape == ref.shape == (3, EMBED)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
