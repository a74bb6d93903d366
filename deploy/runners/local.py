"""In-process runners that need no GPU: torch (the reference for every comparison) and ONNX Runtime."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from deploy.runners.base import Runner
from pipeline.errors import BackendUnavailable, PipelineError


class TorchRunner(Runner):
    """Run a dict-returning nn.Module; the reference for every comparison.

    A copy of the model is moved to `device`/`dtype` unless both already match, so the caller's model is
    never converted in place. Inputs are cast to `dtype`; outputs come back in the model's dtype (bfloat16,
    which numpy lacks, as float32).
    """

    name = "torch"

    def __init__(
        self,
        model: nn.Module,
        device: str = "cpu",
        dtype: torch.dtype | str = torch.float32,
        output_names: Sequence[str] | None = None,
    ):
        super().__init__()
        self.model = model
        self.device = torch.device(device)
        self.dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        self.output_names = list(output_names) if output_names is not None else None
        self._module: nn.Module | None = None
        self._was_training = False

    def activate(self) -> None:
        param = next(self.model.parameters(), None)
        same = param is None or (param.device == self.device and param.dtype == self.dtype)
        self._module = self.model if same else copy.deepcopy(self.model).to(self.device, self.dtype)
        self._was_training = self._module.training
        self._module.eval()

    def deactivate(self) -> None:
        if self._module is self.model:
            self.model.train(self._was_training)
        self._module = None

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if len(feed) != 1:
            raise PipelineError(f"TorchRunner takes one input (image), got {sorted(feed)}")
        x = torch.from_numpy(np.ascontiguousarray(next(iter(feed.values())))).to(self.device, self.dtype)
        with torch.inference_mode():
            out = self._module(x)
        if not isinstance(out, Mapping):
            raise PipelineError(
                f"model returned {type(out).__name__}; a dict of tensors keyed by task is required"
            )
        names = self.output_names if self.output_names is not None else list(out)
        return {n: _to_numpy(out[n]) for n in names}


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()


def _provider_name(p: str | tuple[str, dict[str, Any]]) -> str:
    return p if isinstance(p, str) else p[0]


class OnnxrtRunner(Runner):
    """Run an ONNX file with ONNX Runtime and verify that the requested execution provider is in use.

    onnxruntime-gpu falls back to the CPU provider silently when CUDA or TensorRT libraries are missing, so a
    "GPU" timing could really be a CPU one; after creating the session the runner checks
    `session.get_providers()` and refuses to run on a fallback.
    """

    name = "onnxrt"

    def __init__(
        self,
        path: str | Path,
        providers: Sequence[str | tuple[str, dict[str, Any]]] = ("CPUExecutionProvider",),
        session_options: Any = None,
    ):
        super().__init__()
        self.path = Path(path)
        self.providers = list(providers)
        self.session_options = session_options
        self.session: Any = None

    def activate(self) -> None:
        if not self.path.exists():
            raise PipelineError(f"ONNX file {self.path} does not exist")
        session = ort.InferenceSession(
            str(self.path), sess_options=self.session_options, providers=self.providers
        )
        wanted = _provider_name(self.providers[0])
        active = list(session.get_providers())
        if wanted not in active:
            fallback = active[0] if active else "nothing"
            raise BackendUnavailable(
                f"onnxruntime did not enable {wanted}: the session fell back to {fallback} (providers {active}); "
                "install onnxruntime-gpu with matching CUDA libraries, or request CPUExecutionProvider"
            )
        self.session = session

    def deactivate(self) -> None:
        self.session = None

    @property
    def output_names(self) -> list[str]:
        """Graph output names (the task names), read from the session; empty before `__enter__`.

        Derived from `self.session` so subclasses that only replace how the session is made (ort_gpu) work.
        """
        return [o.name for o in self.session.get_outputs()] if self.session is not None else []

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = self.output_names
        outs = self.session.run(names, {k: np.ascontiguousarray(v) for k, v in feed.items()})
        return dict(zip(names, outs, strict=True))
