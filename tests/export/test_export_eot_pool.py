"""End-of-text pooling as a one-hot MatMul: equal to indexing bit for bit, and what every exported text graph uses."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the build side needs torch, timm and open_clip (pip install -e '.[export]')")

from export.models.eot_pool import select_eot
from export.models.mct_text import MCTTextEncoder
from export.models.openclip import onehot_eot_pooling
from export.onnx_export import eot_pooling, ort_outputs

CONTEXT, VOCAB = 16, 500


def _ids(ends: list[int], seed: int = 0) -> torch.Tensor:
    """Rows of random tokens whose highest id (the eot) sits at `ends`, pad 0 after it."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((len(ends), CONTEXT), dtype=np.int64)
    for row, end in enumerate(ends):
        ids[row, :end] = rng.integers(1, VOCAB - 2, size=end)
        ids[row, end] = VOCAB - 1
    return torch.from_numpy(ids)


def _export(module: torch.nn.Module, ids: torch.Tensor, path, dynamic: bool = True) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (ids,), str(path), dynamo=False, input_names=["ids"], output_names=["emb"],
                          dynamic_axes={"ids": {0: "b"}, "emb": {0: "b"}} if dynamic else None, opset_version=17)


def _open_clip_text():
    """A small OpenCLIP text tower with argmax pooling (the kind MobileCLIP2 and the OpenCLIP S1/S2/B use)."""
    transformer = pytest.importorskip("open_clip.transformer")
    torch.manual_seed(0)
    tower = transformer.TextTransformer(context_length=CONTEXT, vocab_size=VOCAB, width=64, heads=4, layers=2,
                                        output_dim=32)
    with torch.no_grad():
        for p in tower.parameters():  # some OpenCLIP parameters start as torch.empty
            p.copy_(0.1 * torch.randn(p.shape))
    return tower.eval()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_select_eot_equals_indexing_bit_for_bit(dtype):
    ids = _ids([0, 3, 9, CONTEXT - 1, 5])
    x = (1e3 * torch.randn(len(ids), CONTEXT, 24)).to(dtype)  # large values: any rounding would show
    want = x[torch.arange(len(ids)), ids.argmax(dim=-1)]
    assert torch.equal(select_eot(x, ids), want)


def test_mct_text_graph_pools_with_matmul(tmp_path):
    model = MCTTextEncoder(vocab_size=VOCAB, context_length=CONTEXT, dim=64, n_heads=4, n_transformer_layers=1,
                           embed_dim=32, conv_kernel=5).eval().reparameterize()
    _export(model, _ids([4, 7]), tmp_path / "mct.onnx")
    assert eot_pooling(tmp_path / "mct.onnx") == "onehot-matmul"
    ids = _ids([1, 5, 15], seed=1)
    with torch.no_grad():
        np.testing.assert_allclose(ort_outputs(tmp_path / "mct.onnx", ids.numpy()), model(ids).numpy(),
                                   rtol=1e-4, atol=1e-5)


def test_open_clip_pooling_is_rewritten_only_inside_the_context(tmp_path):
    import open_clip.transformer as oc

    tower = _open_clip_text()
    original = oc.text_global_pool
    _export(tower, _ids([4, 7]), tmp_path / "indexing.onnx")
    with onehot_eot_pooling():
        assert oc.text_global_pool is not original
        _export(tower, _ids([4, 7]), tmp_path / "onehot.onnx")
    assert oc.text_global_pool is original
    assert eot_pooling(tmp_path / "indexing.onnx") == "gather"
    assert eot_pooling(tmp_path / "onehot.onnx") == "onehot-matmul"
    ids = _ids([1, 5, 15, 9], seed=2)  # another batch size and other eot positions than at export time
    with torch.no_grad():
        want = tower(ids).numpy()
    got = ort_outputs(tmp_path / "onehot.onnx", ids.numpy())
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(got, ort_outputs(tmp_path / "indexing.onnx", ids.numpy()))


def test_graph_without_argmax_has_no_eot_pooling(tmp_path):
    _export(torch.nn.Embedding(VOCAB, 8), _ids([3]), tmp_path / "emb.onnx")
    assert eot_pooling(tmp_path / "emb.onnx") is None
