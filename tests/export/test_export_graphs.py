"""Graph-level pieces on small modules: the SEBlock pooling rewrite, tanh GELU, fp16 conversion, BN folding."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the build side needs torch, timm and open_clip (pip install -e '.[export]')")
import torch.nn.functional as F
from torch import nn

from export.onnx_export import (check_graph, convert_to_fp16, full_avg_pool_as_mean, ort_outputs, use_tanh_gelu)
from export.reparam import fold_leftover_batchnorms


class AppleStyleSE(nn.Module):
    """Squeeze-excite pooling with kernel = input size, as Apple's SEBlock does."""

    def __init__(self) -> None:
        super().__init__()
        self.reduce, self.expand = nn.Conv2d(8, 2, 1), nn.Conv2d(2, 8, 1)

    def forward(self, inputs):
        _, c, h, w = inputs.size()
        x = F.avg_pool2d(inputs, kernel_size=[h, w])
        return inputs * torch.sigmoid(self.expand(F.relu(self.reduce(x)))).view(-1, c, 1, 1)


def _export(model, x, path, dynamic=True):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (x,), str(path), dynamo=False, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "b"}, "y": {0: "b"}} if dynamic else None, opset_version=17)


def test_full_size_avg_pool_exports_with_dynamic_batch(tmp_path):
    model = AppleStyleSE().eval()
    with pytest.raises(Exception):  # TorchScript cannot export a pool whose kernel is the traced size
        _export(model, torch.randn(2, 8, 16, 16), tmp_path / "raw.onnx")
    with full_avg_pool_as_mean():
        _export(model, torch.randn(2, 8, 16, 16), tmp_path / "se.onnx")
    x = torch.randn(3, 8, 16, 16)  # another batch size than traced
    with torch.no_grad():
        np.testing.assert_allclose(ort_outputs(tmp_path / "se.onnx", x.numpy()), model(x).numpy(), atol=1e-5)
    assert F.avg_pool2d.__name__ == "avg_pool2d"  # restored after the context


def test_tanh_gelu_removes_erf_and_fp16_keeps_float32_io(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.GELU(), nn.Conv2d(16, 8, 1), nn.GELU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    x = torch.rand(2, 3, 32, 32)
    _export(model, x, tmp_path / "exact.onnx")
    assert check_graph(tmp_path / "exact.onnx")["erf_nodes"] == 2
    assert use_tanh_gelu(model) == 2
    _export(model, x, tmp_path / "tanh.onnx")
    assert check_graph(tmp_path / "tanh.onnx")["erf_nodes"] == 0
    convert_to_fp16(tmp_path / "tanh.onnx")
    check_graph(tmp_path / "tanh.onnx")  # onnx.checker passes after conversion (topologically sorted)
    out = ort_outputs(tmp_path / "tanh.onnx", x.numpy())
    assert out.dtype == np.float32
    with torch.no_grad():
        np.testing.assert_allclose(out, model(x).numpy(), atol=5e-3)


def test_leftover_batchnorm_becomes_affine():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4)).eval()
    model[2].running_mean.uniform_(-1, 1)
    model[2].running_var.uniform_(0.5, 2)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        ref = model(x)
        assert fold_leftover_batchnorms(model) == 1
        torch.testing.assert_close(model(x), ref)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
