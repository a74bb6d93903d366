"""ONNX Runtime on the GPU (CUDA or TensorRT execution provider), refusing the silent CPU fallback.

onnxruntime-gpu creates a session even when CUDA/cuDNN/TensorRT libraries are missing and then runs on CPU, only
logging an error. `make_gpu_session` therefore checks `session.get_providers()` and raises
`BackendUnavailable` when the requested provider is not active.

What has run: on the CPU machine only the refusal paths (CPU-only onnxruntime, or a monkeypatched session that
reports a fallback). No GPU build of onnxruntime with a working CUDA/TensorRT provider has been run by this project;
the provider option names follow the ONNX Runtime TensorRT/CUDA EP documentation.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from deploy.environment import cuda_skip_reason, probe_gpu_environment
from deploy.onnx_fp16 import convert_onnx_to_fp16
from deploy.runners import OnnxrtRunner
from pipeline.errors import BackendUnavailable, MissingArtifactError, PipelineError

log = logging.getLogger(__name__)

GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def _ort() -> Any:
    """onnxruntime, looked up when the GPU route runs: there it is the optional onnxruntime-gpu build."""
    try:
        import onnxruntime as ort
    except Exception as e:  # noqa: BLE001
        raise BackendUnavailable(f"onnxruntime is not importable: {e}") from None
    return ort


def ort_gpu_skip_reason(
    provider: str = "CUDAExecutionProvider", probe: dict[str, Any] | None = None
) -> str | None:
    """Why the ONNX Runtime GPU route cannot run here, or None when it may (the session check still applies)."""
    if provider not in GPU_PROVIDERS:
        return f"unknown GPU provider {provider!r} (expected one of {', '.join(GPU_PROVIDERS)})"
    probe = probe or probe_gpu_environment()
    o = probe["onnxruntime"]
    if not o["installed"]:
        return o["error"] or "onnxruntime is not installed"
    if provider not in o["providers"]:
        return (
            f"onnxruntime {o['version']} ({', '.join(o['distributions']) or 'unknown distribution'}) has no "
            f"{provider} (available: {', '.join(o['providers'])}); install onnxruntime-gpu in place of onnxruntime"
        )
    if probe["gpu"] is None:
        return cuda_skip_reason(probe) or "no CUDA device"
    if provider == "TensorrtExecutionProvider" and not probe["tensorrt"]["installed"]:
        return "TensorrtExecutionProvider needs the TensorRT libraries: " + (
            probe["tensorrt"]["error"] or "missing"
        )
    return None


def provider_options(
    provider: str, fp16: bool, cache_dir: Path, device_id: int = 0, workspace_bytes: int | None = None
) -> dict[str, Any]:
    """Provider options for the CUDA or TensorRT execution provider (engine and timing caches under cache_dir)."""
    if provider == "TensorrtExecutionProvider":
        opts: dict[str, Any] = {
            "device_id": device_id,
            "trt_fp16_enable": bool(fp16),
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache_dir),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache_dir),
        }
        if workspace_bytes:
            opts["trt_max_workspace_size"] = int(workspace_bytes)
        return opts
    if provider == "CUDAExecutionProvider":
        return {"device_id": device_id}
    raise PipelineError(f"unknown GPU provider {provider!r}; expected one of {', '.join(GPU_PROVIDERS)}")


def make_gpu_session(
    onnx_path: str | Path,
    provider: str = "CUDAExecutionProvider",
    fp16: bool = True,
    cache_dir: str | Path | None = None,
    device_id: int = 0,
    workspace_bytes: int | None = None,
) -> Any:
    """Create an InferenceSession on a GPU provider and prove it is active.

    fp16 with the TensorRT EP sets `trt_fp16_enable`; with the CUDA EP (which has no such switch) the model is
    first converted by `deploy.onnx_fp16.convert_onnx_to_fp16` (I/O kept float32) into `cache_dir`.
    `cache_dir` (default: a fresh temporary directory) also holds the TensorRT EP's engine and timing caches.

    Raises:
        BackendUnavailable: the provider is not in this onnxruntime build, or the session fell back to another
            provider (the message names what it fell back to and how to fix it).
    """
    ort = _ort()
    path = Path(onnx_path)
    if not path.exists():
        raise MissingArtifactError(f"ONNX model {path} does not exist; run `pipeline run export` first")
    available = list(ort.get_available_providers())
    if provider not in available:
        raise BackendUnavailable(
            f"onnxruntime {getattr(ort, '__version__', '?')} has no {provider} (available: {', '.join(available)}); "
            "install onnxruntime-gpu in place of onnxruntime (never both in one environment)"
        )
    cache = Path(cache_dir) if cache_dir else Path(tempfile.mkdtemp(prefix="ort_gpu_"))
    cache.mkdir(parents=True, exist_ok=True)
    model_path = path
    if fp16 and provider == "CUDAExecutionProvider":
        model_path = cache / f"{path.stem}.fp16.onnx"
        convert_onnx_to_fp16(path, model_path, keep_io_types=True)
    preload = getattr(ort, "preload_dlls", None)
    if callable(preload):  # may let onnxruntime-gpu use the CUDA libraries shipped with torch [unverified]
        try:
            preload()
        except Exception as e:  # noqa: BLE001 - diagnostic only; the provider check below decides
            log.debug("onnxruntime.preload_dlls() failed: %s", e)
    opts = provider_options(provider, fp16, cache, device_id, workspace_bytes)
    session = ort.InferenceSession(str(model_path), providers=[(provider, opts), "CPUExecutionProvider"])
    active = list(session.get_providers())
    if provider not in active:
        raise BackendUnavailable(
            f"onnxruntime fell back to {', '.join(active) or 'nothing'} instead of {provider} (its CUDA/cuDNN"
            f"{'/TensorRT' if provider.startswith('Tensorrt') else ''} libraries did not load; see onnxruntime's "
            "error log above); fix: install the CUDA and cuDNN versions this onnxruntime-gpu needs, or import torch "
            "first and call onnxruntime.preload_dlls(), or request CPUExecutionProvider explicitly"
        )
    return session


class OrtGpuRunner(OnnxrtRunner):
    """`OnnxrtRunner` whose session comes from `make_gpu_session` (provider options, fp16, fallback refusal)."""

    name = "onnxrt-gpu"

    def __init__(
        self,
        path: str | Path,
        provider: str = "CUDAExecutionProvider",
        fp16: bool = True,
        cache_dir: str | Path | None = None,
    ):
        super().__init__(path, providers=(provider, "CPUExecutionProvider"))
        self.provider, self.fp16, self.cache_dir = provider, fp16, cache_dir

    def activate(self) -> None:
        self.session = make_gpu_session(self.path, self.provider, self.fp16, self.cache_dir)
