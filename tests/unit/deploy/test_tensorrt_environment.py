"""Skip reasons and environment probing, with TensorRT absent, broken, faked, and CUDA faked via monkeypatch.

Nothing here touched a GPU: CUDA "presence" is simulated by patching torch.cuda's query functions.
"""

from __future__ import annotations

import subprocess
import sys

import onnxruntime
import pytest
import torch

from deploy.environment import cuda_skip_reason, probe_gpu_environment, sparse_note, tensorrt_skip_reason
from tests.fakes import fake_tensorrt


def _fake_gpu(monkeypatch, cap=(9, 0), name="NVIDIA H100 80GB HBM3"):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=0: cap)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: name)


def _no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_without_tensorrt_and_without_cuda(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    _no_gpu(monkeypatch)
    probe = probe_gpu_environment()
    assert probe["tensorrt"] == {
        "installed": False,
        "version": None,
        "major": None,
        "error": probe["tensorrt"]["error"],
    }
    reason = tensorrt_skip_reason(probe)
    assert reason.startswith("tensorrt is not installed (`pip install tensorrt` needs NVIDIA")
    assert "; no CUDA device" in reason
    assert probe["gpu"] is None and sparse_note(probe) is None


def test_broken_tensorrt_install_is_reported(monkeypatch, tmp_path):
    pkg = tmp_path / "tensorrt"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "raise ImportError('libnvinfer.so.10: cannot open shared object file: No such file or directory')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    _fake_gpu(monkeypatch)
    reason = tensorrt_skip_reason()
    assert reason == (
        "tensorrt is installed but fails to import: ImportError: libnvinfer.so.10: cannot open shared "
        "object file: No such file or directory"
    )


@pytest.mark.parametrize("version", ["10.13.0.35", "11.4.0.106"])
def test_fake_tensorrt_without_cuda(monkeypatch, version):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt.make_fake_tensorrt(version))
    _no_gpu(monkeypatch)
    probe = probe_gpu_environment()
    assert probe["tensorrt"]["installed"] and probe["tensorrt"]["version"] == version
    assert probe["tensorrt"]["major"] == int(version.split(".")[0])
    assert tensorrt_skip_reason(probe).startswith("no CUDA device (torch ")


def test_old_tensorrt_is_refused(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt.make_fake_tensorrt("8.6.1.6"))
    _fake_gpu(monkeypatch)
    assert "too old" in tensorrt_skip_reason()


def test_gpu_with_and_without_sparse_tensor_cores(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt.make_fake_tensorrt("10.13.0.35"))
    _fake_gpu(monkeypatch, cap=(9, 0))
    probe = probe_gpu_environment()
    assert probe["gpu"] == {
        "name": "NVIDIA H100 80GB HBM3",
        "compute_capability": "9.0",
        "sm": 90,
        "sparse_tensor_cores": True,
    }
    assert (
        tensorrt_skip_reason(probe) is None and cuda_skip_reason(probe) is None and sparse_note(probe) is None
    )
    _fake_gpu(monkeypatch, cap=(7, 5), name="Tesla T4")
    probe = probe_gpu_environment()
    assert tensorrt_skip_reason(probe) is None  # dense engines still build on Turing
    assert sparse_note(probe).startswith("GPU sm75 (Tesla T4) has no sparse tensor cores")


def test_onnxruntime_flavour_here():
    ort = probe_gpu_environment()["onnxruntime"]
    providers = onnxruntime.get_available_providers()
    expected = "gpu" if {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(providers) else (
        "cpu" if set(providers) <= {"CPUExecutionProvider", "AzureExecutionProvider"} else "other"
    )
    assert ort["installed"] and ort["version"] == onnxruntime.__version__
    assert ort["providers"] == providers and ort["flavour"] == expected


@pytest.mark.parametrize(
    "providers, flavour",
    [
        (["CPUExecutionProvider"], "cpu"),
        (["AzureExecutionProvider", "CPUExecutionProvider"], "cpu"),
        (["CUDAExecutionProvider", "CPUExecutionProvider"], "gpu"),
        (["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"], "gpu"),
        (["OpenVINOExecutionProvider", "CPUExecutionProvider"], "other"),
    ],
)
def test_onnxruntime_flavour_from_providers(monkeypatch, providers, flavour):
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: list(providers))
    ort = probe_gpu_environment()["onnxruntime"]
    assert ort["providers"] == providers and ort["flavour"] == flavour


def test_import_deploy_without_tensorrt():
    # a fresh interpreter, so re-importing cannot leave two copies of deploy modules behind in this one
    code = (
        "import sys; sys.modules['tensorrt'] = None\n"
        "import deploy.environment, deploy.tensorrt_build, deploy.tensorrt_plan, deploy.onnx_fp16, deploy.tensorrt_logs, "
        "deploy.runners, deploy.ort_gpu, deploy.engine_check, deploy.engine_build, deploy.onnx_validation\n"
        "assert deploy.environment.probe_gpu_environment()['tensorrt']['installed'] is False"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
