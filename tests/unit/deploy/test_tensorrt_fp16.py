"""convert_onnx_to_fp16 on a small real ONNX, checked with onnxruntime CPU (this part really runs here)."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deploy.onnx_fp16 import convert_onnx_to_fp16
from deploy.tensorrt_logs import onnx_node_layer_map


class TinyHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.stem = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.body = nn.Conv2d(16, 16, 3, padding=1)
        self.seg = nn.Conv2d(16, 5, 1)
        self.depth = nn.Conv2d(16, 1, 1)
        self.normal = nn.Conv2d(16, 3, 1)

    def forward(self, x):
        size = x.shape[-2:]
        x = (x - self.mean) / self.std
        f = F.relu(self.body(F.relu(self.stem(x))))
        up = lambda t: F.interpolate(t, size=size, mode="bilinear", align_corners=False)  # noqa: E731
        return {
            "seg": up(self.seg(f)),
            "depth": F.softplus(up(self.depth(f))),
            "normal": F.normalize(up(self.normal(f)), dim=1),
        }


@pytest.fixture(scope="module")
def fp32_onnx(tmp_path_factory):
    torch.manual_seed(0)
    net = TinyHeads().eval()
    with torch.no_grad():
        w = net.body.weight.view(16, 4, 4, 3, 3)  # 2:4 along input channels: zero 2 of every 4
        w[:, :, 2:] = 0
    path = tmp_path_factory.mktemp("fp16") / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            net,
            (torch.rand(1, 3, 32, 40),),
            str(path),
            input_names=["image"],
            output_names=["seg", "depth", "normal"],
            dynamic_axes={"image": {0: "batch"}},
            dynamo=False,
            opset_version=18,
        )
    return path


def test_fp16_outputs_close_and_io_float32(fp32_onnx, tmp_path):
    out = tmp_path / "model.fp16.onnx"
    stats = convert_onnx_to_fp16(fp32_onnx, out, keep_io_types=True)
    assert stats["initializers"] >= 10 and stats["inputs_wrapped"] == 1 and stats["outputs_wrapped"] == 3
    model = onnx.load(str(out))
    init_types = {i.data_type for i in model.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in init_types and onnx.TensorProto.FLOAT not in init_types
    assert all(
        v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        for v in [*model.graph.input, *model.graph.output]
    )
    x = np.random.default_rng(0).random((3, 3, 32, 40), dtype=np.float32)
    ref = ort.InferenceSession(str(fp32_onnx), providers=["CPUExecutionProvider"]).run(None, {"image": x})
    half = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"image": x})
    for a, b in zip(ref, half, strict=True):
        assert b.dtype == np.float32 and b.shape == a.shape
        np.testing.assert_allclose(b, a, atol=1e-2, rtol=1e-2)


def test_fp16_preserves_zeros_and_without_io_types(fp32_onnx, tmp_path):
    out = tmp_path / "all_fp16.onnx"
    convert_onnx_to_fp16(fp32_onnx, out, keep_io_types=False)
    src = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(fp32_onnx)).graph.initializer}
    dst = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(out)).graph.initializer}
    w32, w16 = src["body.weight"], dst["body.weight"]
    assert w16.dtype == np.float16 and np.array_equal(w32 == 0, w16 == 0)  # the 2:4 pattern survives
    model = onnx.load(str(out))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    x = np.random.default_rng(1).random((1, 3, 32, 40)).astype(np.float16)
    seg = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(["seg"], {"image": x})[0]
    assert seg.dtype == np.float16 and np.isfinite(seg).all()


def test_node_layer_map(fp32_onnx):
    m = onnx_node_layer_map(fp32_onnx)
    assert sorted(m.values()) == ["body", "depth", "normal", "seg", "stem"]
