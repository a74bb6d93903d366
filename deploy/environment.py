"""Probe the GPU-side environment: TensorRT, CUDA through torch, the onnxruntime flavour and its providers.

Nothing here needs a GPU or TensorRT to import or run: every probe catches what is missing and reports it as data.
On the CPU development/CI machine only the "missing" branches have ever run (no GPU, no TensorRT). The
"present" branches use only documented calls
(`torch.cuda.get_device_name`, `torch.cuda.get_device_capability`, `onnxruntime.get_available_providers`,
`tensorrt.__version__`) and are exercised in unit tests by monkeypatching those calls, not on real hardware.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import platform
from typing import Any

import onnxruntime as ort
import torch

log = logging.getLogger(__name__)

# Sparse Tensor Cores exist from Ampere (sm80) on; Turing (sm75) and older have none (peers.md §2.4).
SPARSE_TENSOR_CORE_MIN_SM = 80
_ORT_DISTRIBUTIONS = ("onnxruntime-gpu", "onnxruntime", "onnxruntime-directml", "onnxruntime-openvino")
_NOT_INSTALLED_HINT = (
    "tensorrt is not installed (`pip install tensorrt` needs NVIDIA's package index; "
    "or use a TensorRT container)"
)


def _probe_tensorrt() -> dict[str, Any]:
    """Return {"installed", "version", "major", "error"} without raising."""
    out: dict[str, Any] = {"installed": False, "version": None, "major": None, "error": None}
    try:
        trt = importlib.import_module("tensorrt")
    except ModuleNotFoundError as e:
        if e.name != "tensorrt":  # the package exists but one of its own imports is missing
            out["error"] = f"tensorrt is installed but fails to import: {type(e).__name__}: {e}"
            return out
        out["error"] = _NOT_INSTALLED_HINT
        try:
            if importlib.util.find_spec("tensorrt_bindings") is not None:
                out["error"] = (
                    "tensorrt is not importable; only the 'tensorrt_bindings' wheel is present and it lacks "
                    "libnvinfer/libnvonnxparser (install the full tensorrt wheel or use a TensorRT container)"
                )
        except (ImportError, ValueError):
            pass
        return out
    except Exception as e:  # noqa: BLE001 - any import failure (missing .so, ABI) is reported, not raised
        out["error"] = f"tensorrt is installed but fails to import: {type(e).__name__}: {e}"
        return out
    version = str(getattr(trt, "__version__", "") or "")
    out.update(installed=True, version=version or None)
    try:
        out["major"] = int(version.split(".")[0])
    except ValueError:
        out["error"] = f"tensorrt reports an unparseable version {version!r}"
    return out


def _probe_torch_cuda() -> tuple[dict[str, Any], dict[str, Any] | None]:
    torch_info: dict[str, Any] = {
        "installed": False,
        "version": None,
        "cuda_build": None,
        "cuda_available": False,
        "device_count": 0,
        "error": None,
    }
    torch_info.update(
        installed=True, version=torch.__version__, cuda_build=getattr(torch.version, "cuda", None)
    )
    try:
        available = bool(torch.cuda.is_available())
    except Exception as e:  # noqa: BLE001 - a broken driver raises here on some builds
        torch_info["error"] = f"torch.cuda.is_available() raised {type(e).__name__}: {e}"
        available = False
    torch_info["cuda_available"] = available
    if not available:
        return torch_info, None
    try:
        torch_info["device_count"] = int(torch.cuda.device_count())
        major, minor = torch.cuda.get_device_capability(0)
        sm = 10 * int(major) + int(minor)
        gpu = {
            "name": str(torch.cuda.get_device_name(0)),
            "compute_capability": f"{major}.{minor}",
            "sm": sm,
            "sparse_tensor_cores": sm >= SPARSE_TENSOR_CORE_MIN_SM,
        }
    except Exception as e:  # noqa: BLE001
        torch_info["error"] = f"querying CUDA device 0 failed: {type(e).__name__}: {e}"
        return torch_info, None
    return torch_info, gpu


def _probe_onnxruntime() -> dict[str, Any]:
    out: dict[str, Any] = {
        "installed": False,
        "version": None,
        "flavour": None,
        "distributions": [],
        "providers": [],
        "error": None,
    }
    for dist in _ORT_DISTRIBUTIONS:
        try:
            out["distributions"].append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    providers = list(ort.get_available_providers())
    out.update(installed=True, version=getattr(ort, "__version__", None), providers=providers)
    gpu_eps = {"CUDAExecutionProvider", "TensorrtExecutionProvider"}
    if gpu_eps & set(providers):
        out["flavour"] = "gpu"
    elif providers == ["CPUExecutionProvider"] or set(providers) <= {
        "CPUExecutionProvider",
        "AzureExecutionProvider",
    }:
        out["flavour"] = "cpu"
    else:
        out["flavour"] = "other"
    if len([d for d in out["distributions"] if d.startswith("onnxruntime")]) > 1:
        out["error"] = (
            f"several onnxruntime distributions are installed ({', '.join(out['distributions'])}); they share "
            "the import name, keep only one"
        )
    return out


def probe_gpu_environment() -> dict[str, Any]:
    """Describe TensorRT, CUDA (via torch), the GPU and onnxruntime as plain JSON-able data.

    Returns:
        {"python", "tensorrt": {installed, version, major, error}, "torch": {installed, version, cuda_build,
        cuda_available, device_count, error}, "gpu": None or {name, compute_capability, sm,
        sparse_tensor_cores}, "onnxruntime": {installed, version, flavour ("gpu"|"cpu"|"other"|None),
        distributions, providers, error}}. Never raises for a missing component.
    """
    torch_info, gpu = _probe_torch_cuda()
    return {
        "python": platform.python_version(),
        "tensorrt": _probe_tensorrt(),
        "torch": torch_info,
        "gpu": gpu,
        "onnxruntime": _probe_onnxruntime(),
    }


def cuda_skip_reason(probe: dict[str, Any] | None = None) -> str | None:
    """Why CUDA work (PyTorch CUDA latency, TensorRT runs) cannot happen here; None when a device is visible."""
    probe = probe or probe_gpu_environment()
    t = probe["torch"]
    if not t["installed"]:
        return t["error"] or "torch is not installed"
    if probe["gpu"] is None:
        if t.get("error"):
            return f"no CUDA device ({t['error']})"
        if not t.get("cuda_build"):
            return f"no CUDA device (torch {t['version']} is a CPU-only build)"
        return f"no CUDA device (torch {t['version']} built for CUDA {t['cuda_build']}, but none is visible)"
    return None


def tensorrt_skip_reason(probe: dict[str, Any] | None = None) -> str | None:
    """One human-readable reason why TensorRT engines cannot be built and run here, or None when they can.

    Both TensorRT and a CUDA device are needed; when both are missing the two reasons are joined with "; ".
    A GPU without Sparse Tensor Cores is not a reason to skip (dense engines still build): see
    `sparse_note`.
    """
    probe = probe or probe_gpu_environment()
    reasons = []
    trt = probe["tensorrt"]
    if not trt["installed"]:
        reasons.append(trt["error"] or _NOT_INSTALLED_HINT)
    elif trt["major"] is not None and trt["major"] < 10:
        reasons.append(
            f"tensorrt {trt['version']} is too old; this project builds with TensorRT 10.x or 11.x"
        )
    elif trt["error"]:
        reasons.append(trt["error"])
    cuda = cuda_skip_reason(probe)
    if cuda:
        reasons.append(cuda)
    return "; ".join(reasons) if reasons else None


def sparse_note(probe: dict[str, Any] | None = None) -> str | None:
    """A note when the visible GPU cannot run 2:4 sparse kernels (sm < 80); None otherwise or without a GPU."""
    probe = probe or probe_gpu_environment()
    gpu = probe["gpu"]
    if gpu is None or gpu["sparse_tensor_cores"]:
        return None
    return (
        f"GPU sm{gpu['sm']} ({gpu['name']}) has no sparse tensor cores: a 2:4 engine builds but TensorRT "
        "cannot pick sparse kernels; compare dense vs sparse on sm80 or newer"
    )
