"""Runners: one interface over torch, ONNX Runtime and TensorRT (after Polygraphy's runners, trimmed).

`base` holds the contract (`Runner`, `InferenceRunner`, `run_batched`); `local` the torch and ONNX Runtime
runners; `tensorrt_runner` the TensorRT one (it imports `tensorrt` only on `__enter__`). `get_runner("onnxrt",
path)` builds one by name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from deploy.runners.base import InferenceRunner, Runner, run_batched
from deploy.runners.local import OnnxrtRunner, TorchRunner
from deploy.runners.tensorrt_runner import TensorRTRunner
from pipeline.errors import PipelineError

__all__ = [
    "RUNNERS",
    "InferenceRunner",
    "OnnxrtRunner",
    "Runner",
    "TensorRTRunner",
    "TorchRunner",
    "get_runner",
    "register_runner",
    "run_batched",
]

RunnerFactory = Callable[..., InferenceRunner]
RUNNERS: dict[str, RunnerFactory] = {}


def register_runner(name: str) -> Callable[[RunnerFactory], RunnerFactory]:
    """Register a runner class or factory under `name`."""

    def deco(factory: RunnerFactory) -> RunnerFactory:
        RUNNERS[name] = factory
        return factory

    return deco


# TensorRTRunner imports `tensorrt` only on __enter__, so registering it costs nothing on CPU machines.
RUNNERS.update({"torch": TorchRunner, "onnxrt": OnnxrtRunner, "tensorrt": TensorRTRunner})


def get_runner(name: str, *args: Any, **kwargs: Any) -> InferenceRunner:
    """Build the runner registered as `name` (not yet activated).

    Raises:
        PipelineError: For an unknown name, listing the available ones.
    """
    if name not in RUNNERS:
        raise PipelineError(f"Unknown runner '{name}'. Available: {', '.join(sorted(RUNNERS))}")
    return RUNNERS[name](*args, **kwargs)
