"""Engine checks for the build stage: runtime vs reference outputs, task-metric parity, latency per batch size.

`run_engine_checks` is runner-agnostic (default `TensorRTRunner`); it has run on the CPU machine only with stand-in
runners in unit tests, never with a real engine (no TensorRT anywhere here, environment.md §4). `torch_cuda_latency`
needs a CUDA device and has not run on one by this project's tests; without CUDA it raises `BackendUnavailable`.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import BackendUnavailable, PipelineError

log = logging.getLogger(__name__)


def _as_dict(obj: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, Mapping):
        return dict(obj)
    return {k: v for k, v in vars(obj).items() if not k.startswith("_")}


def _batch(inputs: Mapping[str, np.ndarray], b: int) -> dict[str, np.ndarray]:
    """First b samples of every input, repeating samples when fewer than b were saved."""
    out = {}
    for name, arr in inputs.items():
        n = arr.shape[0]
        idx = np.arange(b) % n
        out[name] = np.ascontiguousarray(arr[idx])
    return out


def _agreement(reference: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> dict[str, dict]:
    """Ground-truth-free task agreement (seg argmax, normal angle, depth difference) per reference head."""
    from deploy.compare import runtime_agreement  # the same numbers task_parity reports as "agreement"

    return {
        task: runtime_agreement(task, ref, outputs[task])
        for task, ref in reference.items()
        if task in outputs
    }


def run_engine_checks(
    engine_path: str | Path,
    inputs: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    targets: Mapping[str, np.ndarray] | None,
    tasks: Iterable[str],
    num_classes: int,
    atol: Mapping[str, float],
    rtol: float,
    latency_batches: Iterable[int],
    warmup: int,
    iters: int,
    *,
    batch_size: int = 8,
    miou_tol: float | None = None,
    runner_factory: Callable[[Path], Any] | None = None,
) -> dict[str, Any]:
    """Run an engine on saved validation inputs; compare heads, task metrics and time it per batch size.

    Args:
        engine_path: the engine (or any artifact `runner_factory` accepts).
        inputs: name -> `[N, ...]` arrays saved by the validate stage.
        reference: head -> `[N, ...]` reference outputs (ONNX Runtime CPU) for the same inputs.
        targets: task -> ground truth for metric parity, or None to skip metrics.
        tasks, num_classes: passed to `pipeline.metrics.evaluate.metrics_from_outputs`.
        atol, rtol: per-head tolerances (with a "default" key) for `deploy.compare.compare_outputs`.
        latency_batches: batch sizes to time; each must lie within the engine's profile.
        warmup, iters: per batch size, for `deploy.latency.measure`.
        batch_size: chunk size for the accuracy pass (within the engine's profile).
        miou_tol: allowed |Δ mIoU| in points (BuildConfig.miou_tol) for `metrics_passed`; None: unjudged.
        runner_factory: builds the runner from `engine_path` (default `TensorRTRunner`).

    Returns:
        {"engine", "samples", "comparisons" (OutputComparison dicts), "elementwise_passed", "agreement" (per task,
        no ground truth needed), "task_parity" (`deploy.compare.task_parity` or None without targets),
        "metrics_passed" (None unless miou_tol and targets), "latency": {batch: {"end_to_end": stats,
        "device": stats of device-resident runs (CUDA and a runner with `infer_torch`) or None}}}.
    """
    from deploy.compare import compare_outputs, task_parity
    from deploy.latency import latency_stats, measure
    from deploy.runners import run_batched

    if runner_factory is None:
        from deploy.tensorrt_runner import TensorRTRunner

        runner_factory = TensorRTRunner
    if not inputs:
        raise PipelineError("run_engine_checks got no inputs; run `pipeline run validate` to save them")
    engine_path = Path(engine_path)
    sync = _cuda_sync()
    result: dict[str, Any] = {
        "engine": str(engine_path),
        "samples": int(next(iter(inputs.values())).shape[0]),
    }
    with runner_factory(engine_path) as runner:
        outputs = run_batched(runner, inputs, batch_size)
        missing = sorted(set(reference) - set(outputs))
        if missing:
            raise PipelineError(f"engine outputs {sorted(outputs)} lack reference head(s) {missing}")
        comparisons = compare_outputs(reference, outputs, atol=atol, rtol=rtol)
        result["comparisons"] = [_as_dict(c) for c in comparisons]
        result["elementwise_passed"] = all(bool(c) for c in comparisons)
        result["agreement"] = _agreement(reference, outputs)
        result["task_parity"], result["metrics_passed"] = None, None
        if targets is not None:
            metric_atol = None if miou_tol is None else {"miou": float(miou_tol), "default": float("inf")}
            parity = task_parity(
                reference, outputs, targets, list(tasks), num_classes, metric_atol=metric_atol
            )
            result["task_parity"] = parity
            if metric_atol is not None:
                result["metrics_passed"] = all(bool(t["passed"]) for t in parity.values())
        result["latency"] = {}
        for b in latency_batches:
            feed = _batch(inputs, int(b))
            e2e = measure(lambda feed=feed: runner.infer(feed), warmup, iters, sync=sync)
            entry = {"end_to_end": latency_stats(e2e, int(b)), "device": None}
            if sync is not None and hasattr(runner, "infer_torch"):
                import torch

                dev = {k: torch.from_numpy(v).cuda() for k, v in feed.items()}
                dev_ms = measure(lambda dev=dev: runner.infer_torch(dev), warmup, iters, sync=sync)
                entry["device"] = latency_stats(dev_ms, int(b))
            result["latency"][str(int(b))] = entry
    return result


def _cuda_sync() -> Callable[[], None] | None:
    try:
        import torch
    except Exception:  # noqa: BLE001
        return None
    return torch.cuda.synchronize if torch.cuda.is_available() else None


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
        dtype: torch.float32 / torch.float16 or "fp32" / "fp16".
        hw: input height and width.

    Raises:
        BackendUnavailable: no CUDA device (the message says why; see `deploy.environment.cuda_skip_reason`).
    """
    import torch

    from deploy.latency import latency_stats, measure

    if not torch.cuda.is_available():
        from deploy.environment import cuda_skip_reason

        raise BackendUnavailable(
            f"PyTorch CUDA latency needs a GPU: {cuda_skip_reason() or 'no CUDA device'}"
        )
    if isinstance(dtype, str):
        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    net = copy.deepcopy(model).eval().to(device=device, dtype=dtype)
    out: dict[str, dict[str, Any]] = {}
    with torch.inference_mode():
        for b in batches:
            x = torch.rand(int(b), channels, hw[0], hw[1], device=device, dtype=dtype)
            samples = measure(lambda x=x: net(x), warmup, iters, sync=torch.cuda.synchronize)
            out[str(int(b))] = latency_stats(samples, int(b))
    return out
