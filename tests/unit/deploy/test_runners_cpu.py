"""Runner contract on CPU: torch vs ONNX Runtime, provider fallback detection, registry."""

from __future__ import annotations

import sys

import numpy as np
import onnxruntime
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deploy.runners import OnnxrtRunner, TensorRTRunner, TorchRunner, get_runner, run_batched
from pipeline.errors import BackendUnavailable, PipelineError

TASKS = ("seg", "depth", "normal")


class SmallMTLNet(nn.Module):
    """Conv-BN-ReLU backbone (16/32 channels) and three heads returning the task dict of the contract."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),
        )
        self.heads = nn.ModuleDict(
            {t: nn.Conv2d(32, c, 1) for t, c in (("seg", 4), ("depth", 1), ("normal", 3))}
        )

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.backbone(image)
        up = {t: F.interpolate(h(f), size=image.shape[-2:], mode="bilinear") for t, h in self.heads.items()}
        return {
            "seg": up["seg"],
            "depth": F.softplus(up["depth"]),
            "normal": F.normalize(up["normal"], dim=1),
        }


@pytest.fixture(scope="module")
def net() -> SmallMTLNet:
    torch.manual_seed(0)
    return SmallMTLNet().eval()


@pytest.fixture(scope="module")
def onnx_path(net, tmp_path_factory):
    from exporters.onnx_export import export_onnx

    path = tmp_path_factory.mktemp("runners") / "small.onnx"
    export_onnx(net, path, task_names=TASKS, example_input=torch.rand(2, 3, 16, 16), exporter="torchscript")
    return path


@pytest.fixture()
def feed():
    return {"image": np.random.default_rng(0).random((3, 3, 16, 16), dtype=np.float32)}


def test_torch_and_onnxrt_agree(net, onnx_path, feed):
    with TorchRunner(net) as ref_runner, OnnxrtRunner(onnx_path) as ort_runner:
        ref, got = ref_runner.infer(feed), ort_runner.infer(feed)
    assert list(got) == list(TASKS) and list(ref) == list(TASKS)
    for t in TASKS:
        assert got[t].shape == ref[t].shape and np.abs(got[t] - ref[t]).max() < 1e-4


def test_nothing_heavy_before_enter(onnx_path, feed, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("session created in __init__")

    monkeypatch.setattr(onnxruntime, "InferenceSession", boom)
    runner = OnnxrtRunner(onnx_path)
    with pytest.raises(PipelineError, match="outside its 'with' block"):
        runner.infer(feed)


def test_provider_fallback_is_refused(onnx_path, monkeypatch):
    class CpuOnlySession:
        def __init__(self, path, sess_options=None, providers=None):
            self.requested = providers

        def get_providers(self):
            return ["CPUExecutionProvider"]  # what onnxruntime-gpu reports after a silent fallback

        def get_outputs(self):
            return []

    monkeypatch.setattr(onnxruntime, "InferenceSession", CpuOnlySession)
    runner = OnnxrtRunner(onnx_path, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(
        BackendUnavailable, match="did not enable CUDAExecutionProvider.*fell back to CPUExecutionProvider"
    ):
        with runner:
            pass
    with OnnxrtRunner(onnx_path, providers=[("CPUExecutionProvider", {})]):
        pass  # a (name, options) pair is accepted and CPU is what it got


def test_torch_runner_fp16_leaves_callers_model_alone(net, feed):
    try:
        with TorchRunner(net, dtype="float16") as runner:
            out = runner.infer(feed)
    except RuntimeError as e:  # some CPU builds lack half kernels; the copy semantics are what we test
        pytest.skip(f"no CPU float16 kernels: {e}")
    assert out["seg"].dtype == np.float16
    assert next(net.parameters()).dtype == torch.float32 and not net.training


def test_torch_runner_restores_training_mode(net, feed):
    net.train()
    try:
        with TorchRunner(net, output_names=["depth"]) as runner:
            assert not net.training
            assert list(runner.infer(feed)) == ["depth"]
        assert net.training
    finally:
        net.eval()


def test_run_batched_concatenates(onnx_path, feed):
    with OnnxrtRunner(onnx_path) as runner:
        whole = runner.infer(feed)
        chunked = run_batched(runner, feed, batch_size=2)
    for t in TASKS:
        np.testing.assert_allclose(chunked[t], whole[t], atol=1e-6)


def test_registry(net, onnx_path, monkeypatch, tmp_path):
    assert isinstance(get_runner("torch", net), TorchRunner)
    assert isinstance(get_runner("onnxrt", onnx_path), OnnxrtRunner)
    with pytest.raises(PipelineError, match="^Unknown runner 'trt'. Available: onnxrt, tensorrt, torch$"):
        get_runner("trt")

    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not read: tensorrt is missing")
    trt_runner = get_runner("tensorrt", engine, device="cpu")  # nothing is loaded before __enter__
    assert isinstance(trt_runner, TensorRTRunner) and trt_runner.engine_path == engine
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # what a machine without TensorRT looks like
    with pytest.raises(BackendUnavailable, match="TensorRT is unavailable"):
        trt_runner.__enter__()
