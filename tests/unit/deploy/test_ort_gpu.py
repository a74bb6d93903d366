"""ONNX Runtime GPU route: skip reasons and refusal of the silent CPU fallback (sessions monkeypatched).

No GPU build of onnxruntime ran here; the fake module records what make_gpu_session asks for.
"""

from __future__ import annotations

import sys
import types
import warnings

import numpy as np
import onnx
import pytest
import torch

from deploy.ort_gpu import OrtGpuRunner, make_gpu_session, ort_gpu_skip_reason
from pipeline.errors import BackendUnavailable


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("ortgpu") / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            torch.nn.Conv2d(3, 4, 1).eval(),
            (torch.rand(1, 3, 8, 8),),
            str(path),
            input_names=["image"],
            output_names=["seg"],
            dynamo=False,
            opset_version=18,
        )
    return path


def fake_ort(available, active):
    mod = types.ModuleType("onnxruntime")
    mod.__version__ = "1.31.1"
    mod.created = []
    mod.get_available_providers = lambda: list(available)

    class Session:
        def __init__(self, path, sess_options=None, providers=None):
            mod.created.append((path, providers))

        def get_providers(self):
            return list(active)

        def get_outputs(self):
            return [types.SimpleNamespace(name="seg")]

        def run(self, names, feed):
            return [np.zeros((1, 4, 8, 8), np.float32)]

    mod.InferenceSession = Session
    return mod


def test_cpu_onnxruntime_here_is_skipped_with_reason(onnx_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("a GPU onnxruntime is installed here")
    reason = ort_gpu_skip_reason("CUDAExecutionProvider")
    assert "has no CUDAExecutionProvider" in reason and "install onnxruntime-gpu" in reason
    with pytest.raises(BackendUnavailable, match="has no CUDAExecutionProvider"):
        make_gpu_session(onnx_path, "CUDAExecutionProvider")


def test_skip_reason_from_probe():
    probe = {
        "onnxruntime": {
            "installed": True,
            "version": "1.31.1",
            "distributions": ["onnxruntime-gpu==1.31.1"],
            "providers": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
            "error": None,
        },
        "gpu": None,
        "torch": {"installed": True, "version": "2.13.0+cpu", "cuda_build": None, "error": None},
        "tensorrt": {"installed": False, "error": "tensorrt is not installed"},
    }
    assert ort_gpu_skip_reason("CUDAExecutionProvider", probe).startswith("no CUDA device")
    probe["gpu"] = {"name": "H100", "sm": 90}
    assert ort_gpu_skip_reason("CUDAExecutionProvider", probe) is None
    assert ort_gpu_skip_reason("TensorrtExecutionProvider", probe).startswith(
        "TensorrtExecutionProvider needs"
    )


@pytest.mark.parametrize(
    "provider,active",
    [
        ("CUDAExecutionProvider", ["CPUExecutionProvider"]),
        ("TensorrtExecutionProvider", ["CUDAExecutionProvider", "CPUExecutionProvider"]),
    ],
)
def test_fallback_is_refused(monkeypatch, onnx_path, tmp_path, provider, active):
    mod = fake_ort(["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"], active)
    monkeypatch.setitem(sys.modules, "onnxruntime", mod)
    with pytest.raises(BackendUnavailable) as ei:
        make_gpu_session(onnx_path, provider, fp16=False, cache_dir=tmp_path)
    msg = str(ei.value)
    assert "\n" not in msg
    assert msg.startswith(f"onnxruntime fell back to {', '.join(active)} instead of {provider}")
    assert "fix:" in msg


def test_tensorrt_ep_options(monkeypatch, onnx_path, tmp_path):
    mod = fake_ort(
        ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
        ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    monkeypatch.setitem(sys.modules, "onnxruntime", mod)
    make_gpu_session(
        onnx_path, "TensorrtExecutionProvider", fp16=True, cache_dir=tmp_path / "c", workspace_bytes=1 << 30
    )
    path, providers = mod.created[0]
    assert path == str(onnx_path) and providers[1] == "CPUExecutionProvider"
    name, opts = providers[0]
    assert name == "TensorrtExecutionProvider"
    assert opts["trt_fp16_enable"] is True and opts["trt_engine_cache_enable"] is True
    assert opts["trt_engine_cache_path"] == str(tmp_path / "c") and opts["trt_timing_cache_enable"] is True
    assert opts["trt_max_workspace_size"] == 1 << 30


def test_cuda_ep_fp16_converts_model_and_runner(monkeypatch, onnx_path, tmp_path):
    mod = fake_ort(
        ["CUDAExecutionProvider", "CPUExecutionProvider"], ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    monkeypatch.setitem(sys.modules, "onnxruntime", mod)
    with OrtGpuRunner(onnx_path, "CUDAExecutionProvider", fp16=True, cache_dir=tmp_path) as r:
        out = r.infer({"image": np.zeros((1, 3, 8, 8), np.float32)})
    assert list(out) == ["seg"]
    path, providers = mod.created[0]
    assert path == str(tmp_path / "m.fp16.onnx") and providers[0] == (
        "CUDAExecutionProvider",
        {"device_id": 0},
    )
    assert {i.data_type for i in onnx.load(path).graph.initializer} == {onnx.TensorProto.FLOAT16}
