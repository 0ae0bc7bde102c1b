"""MCTTextEncoder: ONNX export (opset 17, dynamic batch) runs in ONNX Runtime and matches torch; reparameterization is exact and idempotent."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the export side needs torch")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
from export.models.mct_text import MCTTextEncoder, TextTransformer  # noqa: E402

SMALL = dict(vocab_size=500, context_length=16, dim=64, n_heads=4, n_transformer_layers=2, embed_dim=32)
EOT = SMALL["vocab_size"] - 1


def _ids(rng: np.random.Generator, ends: list[int]) -> torch.Tensor:
    """Token ids with sot/eot-like structure: random tokens, the highest id at `end`, pad 0 after it."""
    ids = np.zeros((len(ends), SMALL["context_length"]), dtype=np.int64)
    for row, end in enumerate(ends):
        ids[row, :end] = rng.integers(1, EOT - 1, size=end)
        ids[row, end] = EOT
    return torch.from_numpy(ids)


def _randomize_branches(model: torch.nn.Module, seed: int) -> None:
    """Give BatchNorm statistics and layer scales non-trivial values so reparameterization has something to fold."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if name.endswith(("running_var",)):
                t.copy_(0.5 + torch.rand(t.shape, generator=gen))
            elif name.endswith(("running_mean", "layer_scale")) or (".bn." in name or "rbr_skip" in name):
                t.copy_(0.3 * torch.randn(t.shape, generator=gen))


def test_init_is_deterministic_and_default_matches_s0_layout() -> None:
    torch.manual_seed(0)
    a = TextTransformer(**SMALL, conv_kernel=5)
    torch.manual_seed(1)  # the global RNG must not matter
    b = TextTransformer(**SMALL, conv_kernel=5)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    a = MCTTextEncoder()
    keys = set(a.state_dict())
    assert {"projection_layer", "embedding_layer.weight", "positional_embedding.pos_embed.pos_embed",
            "transformer.0.token_mixer.mixer.rbr_conv.0.conv.weight", "transformer.5.convffn.fc2.weight",
            "final_layer_norm.weight"} <= keys
    assert torch.isfinite(a.projection_layer).all() and a.projection_layer.abs().sum() > 0


@pytest.mark.parametrize("conv_kernel, causal", [(5, False), (None, True)], ids=["mct", "base-causal"])
def test_reparameterize_is_exact_and_idempotent(conv_kernel, causal) -> None:
    model = TextTransformer(**SMALL, conv_kernel=conv_kernel, causal=causal).eval()
    _randomize_branches(model, seed=1)
    ids = _ids(np.random.default_rng(0), [3, 9, 15])
    with torch.no_grad():
        before = model(ids)
        after = model.reparameterize()(ids)
        again = model.reparameterize()(ids)
    assert not [n for n, m in model.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)
    assert torch.equal(after, again)


@pytest.mark.parametrize("conv_kernel, causal", [(5, False), (None, True)], ids=["mct", "base-causal"])
def test_onnx_export_matches_torch(tmp_path, conv_kernel, causal) -> None:
    model = TextTransformer(**SMALL, conv_kernel=conv_kernel, causal=causal).eval()
    _randomize_branches(model, seed=2)
    model.reparameterize()
    rng = np.random.default_rng(3)
    path = tmp_path / "text.onnx"
    torch.onnx.export(model, (_ids(rng, [4, 7]),), str(path), input_names=["ids"], output_names=["emb"],
                      opset_version=17, dynamic_axes={"ids": {0: "batch"}, "emb": {0: "batch"}}, dynamo=False)
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    ops = {node.op_type for node in graph.graph.node}
    assert not ops & {"If", "Loop", "BatchNormalization"}, ops
    assert "ArgMax" in ops  # the end-of-text token is picked in the graph, per row
    assert not ops & {"Tile", "GatherElements", "GatherND"}, ops  # ... by a one-hot MatMul NNAPI can run
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ids = _ids(rng, [1, 5, 10, 15, 8])  # another batch size and other eot positions than at export time
    got = session.run(None, {"ids": ids.numpy()})[0]
    with torch.no_grad():
        want = model(ids).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # each row depends on its own eot position
    assert np.linalg.norm(got[1] - got[2]) > 1e-3 * np.linalg.norm(got[1])
