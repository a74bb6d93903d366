"""Engine checks: a runtime (TensorRT engine or ONNX Runtime GPU) against the validate stage's saved reference.

`run_engine_checks` judges outputs with `deploy.runtime_check` (the rule validate uses) and times the runtime per
batch size. It is runner-agnostic (default `TensorRTRunner`) and has run on the CPU machine only with the TensorRT
test double, never with a real engine. `torch_cuda_latency` needs a CUDA device; without one it raises
`BackendUnavailable`.
"""

from __future__ import annotations

import copy
import math
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deploy.environment import cuda_skip_reason
from deploy.io import load_npz
from deploy.latency import latency_stats, measure
from deploy.ort_gpu import OrtGpuRunner, ort_gpu_skip_reason
from deploy.runners import TensorRTRunner
from deploy.runtime_check import Tolerances, check_runtime_against_reference
from pipeline.checkpoint import HardenedCheckpoint, read_checkpoint
from pipeline.config import RunConfig, as_task_kinds
from pipeline.errors import BackendUnavailable

TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class CheckSettings:
    """How an engine is judged and timed: tolerances, the accuracy-pass batch size, latency batches and counts."""

    atol: Mapping[str, float]
    rtol: float
    miou_tol: float
    batch_size: int
    latency_batches: tuple[int, ...]
    warmup: int
    iters: int

    @property
    def tolerances(self) -> Tolerances:
        # Engines run in FP16: only mIoU is judged (in points); other metric deltas are reported, not judged.
        return Tolerances(self.atol, self.rtol, {"miou": float(self.miou_tol), "default": math.inf})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_settings_from_config(
    cfg: RunConfig,
    *,
    latency_batches: Iterable[int] | None = None,
    warmup: int | None = None,
    iters: int | None = None,
) -> CheckSettings:
    """The run's engine-check settings; the keyword arguments override the build section's timing fields.

    The accuracy pass uses validate.batch_size (the chunks the reference was produced in), capped at
    build.max_batch so every chunk fits the engine's optimisation profile; rtol is validate.rtol.
    """
    b = cfg.build
    return CheckSettings(
        atol=dict(b.atol),
        rtol=float(cfg.validate.rtol),
        miou_tol=float(b.miou_tol),
        batch_size=min(int(cfg.validate.batch_size), int(b.max_batch)),
        latency_batches=tuple(
            int(x) for x in (b.latency_batches if latency_batches is None else latency_batches)
        ),
        warmup=int(b.warmup if warmup is None else warmup),
        iters=int(b.iters if iters is None else iters),
    )


@dataclass(frozen=True)
class ReferenceData:
    """What the validate and harden stages saved for judging a runtime in another process."""

    inputs: Mapping[str, np.ndarray]
    outputs: Mapping[str, np.ndarray]
    targets: Mapping[str, np.ndarray] | None
    tasks: Mapping[str, str] | tuple[str, ...]  # name -> kind (a tuple of kinds: names equal kinds)
    num_classes: int
    two_four_layers: tuple[str, ...]
    source: str  # file name of the reference outputs


def load_reference(validate_dir: str | Path, hardened_checkpoint: str | Path) -> ReferenceData:
    """Saved inputs, reference outputs and targets, plus tasks, classes and 2:4 layers from harden/model.pt.

    The reference is PyTorch's FP32 output (validate/outputs_torch.npz), the reference of every comparison in the
    project and the file the build stage declares as its input.
    """
    val = Path(validate_dir)
    ref_file = val / "outputs_torch.npz"
    ckpt = read_checkpoint(Path(hardened_checkpoint), HardenedCheckpoint)
    return ReferenceData(
        inputs=load_npz(val / "inputs.npz"),
        outputs=load_npz(ref_file),
        targets=load_npz(val / "targets.npz") if (val / "targets.npz").exists() else None,
        tasks=as_task_kinds(ckpt.tasks),
        num_classes=int(ckpt.num_classes),
        two_four_layers=tuple(ckpt.two_four_layers),
        source=ref_file.name,
    )


def _tiled(inputs: Mapping[str, np.ndarray], b: int) -> dict[str, np.ndarray]:
    """First b samples of every input, repeating samples when fewer than b were saved."""
    return {name: np.ascontiguousarray(arr[np.arange(b) % arr.shape[0]]) for name, arr in inputs.items()}


def _cuda_sync() -> Callable[[], None] | None:
    return torch.cuda.synchronize if torch.cuda.is_available() else None


def _latency(runner: Any, inputs: Mapping[str, np.ndarray], settings: CheckSettings) -> dict[str, Any]:
    """End-to-end (host arrays) and, on CUDA with a runner that has `infer_torch`, device-resident latency."""
    sync = _cuda_sync()
    out: dict[str, Any] = {}
    for b in settings.latency_batches:
        feed = _tiled(inputs, b)
        e2e = measure(lambda feed=feed: runner.infer(feed), settings.warmup, settings.iters, sync=sync)
        entry = {"end_to_end": latency_stats(e2e, b), "device": None}
        if sync is not None and hasattr(runner, "infer_torch"):
            dev = {k: torch.from_numpy(v).cuda() for k, v in feed.items()}
            dev_ms = measure(
                lambda dev=dev: runner.infer_torch(dev), settings.warmup, settings.iters, sync=sync
            )
            entry["device"] = latency_stats(dev_ms, b)
        out[str(b)] = entry
    return out


def run_engine_checks(
    engine_path: str | Path,
    reference: ReferenceData,
    settings: CheckSettings,
    runner_factory: Callable[[Path], Any] | None = None,
) -> dict[str, Any]:
    """Run an engine on the saved inputs, judge it against the reference and time it per batch size.

    Args:
        engine_path: the engine (or any artifact `runner_factory` accepts).
        runner_factory: builds the runner from `engine_path` (default `TensorRTRunner`).

    Returns:
        `deploy.runtime_check.judge_outputs`'s verdict ("heads", "heads_passed", "agreement", "parity",
        "metrics_agree", "passed") plus "engine", "samples" and "latency": {batch: {"end_to_end": stats,
        "device": stats of device-resident runs (CUDA and a runner with `infer_torch`) or None}}.
    """
    engine_path = Path(engine_path)
    factory = runner_factory or TensorRTRunner
    result: dict[str, Any] = {
        "engine": str(engine_path),
        "samples": len(next(iter(reference.inputs.values()), [])),
    }
    with factory(engine_path) as runner:
        _, verdict = check_runtime_against_reference(
            runner,
            reference.inputs,
            reference.outputs,
            reference.targets,
            reference.tasks,
            reference.num_classes,
            settings.tolerances,
            settings.batch_size,
        )
        result |= verdict
        result["latency"] = _latency(runner, reference.inputs, settings)
    return result


def check_ort_gpu(
    onnx_path: str | Path,
    provider: str,
    fp16: bool,
    reference: ReferenceData,
    settings: CheckSettings,
    cache_dir: str | Path,
    probe: dict[str, Any] | None = None,
    enabled: bool = True,
) -> dict[str, Any]:
    """The ONNX Runtime GPU route for one provider: {"status": skipped|ok|failed|error, ...}; never raises.

    `enabled` is build.ort_gpu; when the route cannot run here, that reason is reported before the setting.
    """
    reason = ort_gpu_skip_reason(provider, probe) or (None if enabled else "build.ort_gpu is false")
    if reason:
        return {"status": "skipped", "reason": reason}
    try:
        checks = run_engine_checks(
            onnx_path, reference, settings, lambda p: OrtGpuRunner(p, provider, fp16, cache_dir)
        )
    except Exception as e:  # noqa: BLE001 - one failing route must not hide the others
        return {"status": "error", "reason": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
    return {"status": "ok" if checks["passed"] else "failed", "provider": provider, "checks": checks}


def torch_cuda_latency(
    model: Any,
    batches: Iterable[int],
    dtype: Any,
    warmup: int,
    iters: int,
    *,
    hw: tuple[int, int],
    channels: int = 3,
    device: str = "cuda",
) -> dict[str, dict[str, Any]]:
    """PyTorch CUDA reference latency (eager, inference mode) per batch size, on a copy of `model`.

    Args:
        dtype: torch.float32 / torch.float16 or "fp32" / "fp16" / "bf16".
        hw: input height and width.

    Raises:
        BackendUnavailable: no CUDA device (the message says why; see `deploy.environment.cuda_skip_reason`).
    """
    if not torch.cuda.is_available():
        raise BackendUnavailable(
            f"PyTorch CUDA latency needs a GPU: {cuda_skip_reason() or 'no CUDA device'}"
        )
    if isinstance(dtype, str):
        dtype = TORCH_DTYPES[dtype]
    net = copy.deepcopy(model).eval().to(device=device, dtype=dtype)
    out: dict[str, dict[str, Any]] = {}
    with torch.inference_mode():
        for b in batches:
            x = torch.rand(int(b), channels, hw[0], hw[1], device=device, dtype=dtype)
            samples = measure(lambda x=x: net(x), warmup, iters, sync=torch.cuda.synchronize)
            out[str(int(b))] = latency_stats(samples, int(b))
    return out


def torch_cuda_latencies(
    model: Any, settings: CheckSettings, hw: tuple[int, int]
) -> dict[str, dict[str, Any]]:
    """`torch_cuda_latency` in FP32 and FP16 at the settings' batches: {"fp32": stats | {"error"}, "fp16": ...}."""
    out: dict[str, dict[str, Any]] = {}
    for name in ("fp32", "fp16"):
        try:
            out[name] = torch_cuda_latency(
                model, settings.latency_batches, name, settings.warmup, settings.iters, hw=hw
            )
        except Exception as e:  # noqa: BLE001 - one dtype failing must not hide the other
            out[name] = {"error": f"{type(e).__name__}: {e}"}
    return out
