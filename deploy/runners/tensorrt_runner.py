"""Run a serialized TensorRT engine through the runner contract, with torch CUDA tensors as device buffers.

Contract (design.md §5): nothing heavy in `__init__`; `__enter__` deserializes the engine and creates the execution
context; `infer(feed) -> dict[str, np.ndarray]` keyed by the engine's output tensor names (TensorRT keeps the ONNX
input/output names, so these are the head names); `__exit__` releases everything.

Never run against real TensorRT: no machine available to this project has it. The call sequence
(Runtime.deserialize_cuda_engine, create_execution_context, num_io_tensors / get_tensor_name / get_tensor_mode /
get_tensor_dtype, set_input_shape, get_tensor_shape, set_tensor_address, execute_async_v3) follows the TensorRT 10/11
Python API docs; unit tests drive it only through the recording stand-in `tests/fakes/fake_tensorrt.py`, with
CPU torch tensors standing in for CUDA ones.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deploy.runners.base import Runner
from deploy.tensorrt_build import import_tensorrt
from pipeline.errors import BackendUnavailable, MissingArtifactError, PipelineError

log = logging.getLogger(__name__)

# trt.DataType member name -> torch dtype name
_DTYPES = {
    "FLOAT": "float32",
    "HALF": "float16",
    "BF16": "bfloat16",
    "INT8": "int8",
    "INT32": "int32",
    "INT64": "int64",
    "BOOL": "bool",
    "UINT8": "uint8",
}


class _HostStream:
    """Stand-in for a CUDA stream when device="cpu".

    That device exists only so tests can drive the call wiring with a fake tensorrt and host buffers; real TensorRT
    always needs CUDA memory and a CUDA stream.
    """

    cuda_stream = 0

    def synchronize(self) -> None:
        pass


def _dtype_name(trt_dtype: Any) -> str:
    return getattr(trt_dtype, "name", str(trt_dtype)).split(".")[-1]


class TensorRTRunner(Runner):
    """Context-managed TensorRT engine runner (a `deploy.runners.base.Runner`).

    Args:
        engine_path: a serialized engine built by `deploy.tensorrt_build.build_engine` on this GPU model and
            TensorRT version (engines are not portable across either).
        device: the torch CUDA device holding the I/O buffers ("cpu" only for tests with a fake tensorrt).
    """

    name = "tensorrt"

    def __init__(self, engine_path: str | Path, device: str = "cuda:0"):
        super().__init__()
        self.engine_path = Path(engine_path)
        self.device = device
        self._trt: Any = None
        self._runtime = self._engine = self._context = self._stream = self._logger = None
        self.input_names: list[str] = []
        self.output_names: list[str] = []

    # -- lifecycle ---------------------------------------------------------------------------------------

    def activate(self) -> None:
        if not self.engine_path.exists():
            raise MissingArtifactError(
                f"TensorRT engine {self.engine_path} does not exist; run `pipeline run build`"
            )
        trt = import_tensorrt()
        if self._on_cuda and not torch.cuda.is_available():
            raise BackendUnavailable("TensorRTRunner needs a CUDA device; torch.cuda.is_available() is False")
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self._engine is None:
            raise PipelineError(
                f"TensorRT could not deserialize {self.engine_path}; it was probably built with another TensorRT "
                "version or GPU; rebuild it here with `pipeline run build`"
            )
        self._context = self._engine.create_execution_context()
        self._stream = torch.cuda.Stream(device=self.device) if self._on_cuda else _HostStream()
        self.input_names, self.output_names = [], []
        for i in range(self._engine.num_io_tensors):
            n = self._engine.get_tensor_name(i)
            is_input = self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT
            (self.input_names if is_input else self.output_names).append(n)

    def deactivate(self) -> None:
        # Release in reverse creation order; the logger must outlive the objects made with it.
        self._context = None
        self._engine = None
        self._runtime = None
        self._stream = None
        self._logger = None

    # -- inference ---------------------------------------------------------------------------------------

    @property
    def _on_cuda(self) -> bool:
        return str(self.device).startswith("cuda")

    def _torch_dtype(self, tensor_name: str) -> Any:
        name = _dtype_name(self._engine.get_tensor_dtype(tensor_name))
        if name not in _DTYPES:
            raise PipelineError(f"engine tensor '{tensor_name}' has unsupported TensorRT dtype {name}")
        return getattr(torch, _DTYPES[name])

    def _profile_range(self, name: str) -> str:
        try:
            lo, _, hi = self._engine.get_tensor_profile_shape(name, 0)
            return f"{tuple(lo)}..{tuple(hi)}"
        except Exception:  # noqa: BLE001 - only used to word an error
            return "the engine's profile"

    def infer_torch(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Run on device-resident torch tensors and return device-resident outputs (no host copies).

        The caller synchronises (`torch.cuda.synchronize()` or the runner's stream) before reading outputs; this is
        the path to time GPU compute without H2D/D2H transfers.
        """
        if self._context is None:
            raise PipelineError("TensorRTRunner.infer called outside `with TensorRTRunner(...) as runner:`")
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise PipelineError(f"feed lacks engine input(s) {missing}; engine inputs: {self.input_names}")
        keep = []
        for n in self.input_names:
            t = inputs[n].to(device=self.device, dtype=self._torch_dtype(n)).contiguous()
            keep.append(t)
            if not self._context.set_input_shape(n, tuple(t.shape)):
                raise PipelineError(
                    f"input '{n}' shape {tuple(t.shape)} is outside {self._profile_range(n)}; "
                    "rebuild with a wider build.min_batch/max_batch"
                )
            self._context.set_tensor_address(n, int(t.data_ptr()))
        outputs = {}
        for n in self.output_names:
            shape = tuple(self._context.get_tensor_shape(n))
            if any(d < 0 for d in shape):
                raise PipelineError(
                    f"output '{n}' shape {shape} is unresolved after setting the input shapes"
                )
            out = torch.empty(shape, dtype=self._torch_dtype(n), device=self.device)
            self._context.set_tensor_address(n, int(out.data_ptr()))
            outputs[n] = out
        stream = self._stream
        if self._on_cuda:  # input copies were queued on the current stream; TensorRT runs on ours
            stream.wait_stream(torch.cuda.current_stream(self.device))
        if not self._context.execute_async_v3(stream.cuda_stream):
            raise PipelineError(f"TensorRT execute_async_v3 failed for {self.engine_path.name}")
        if self._on_cuda:
            torch.cuda.current_stream(self.device).wait_stream(stream)
            for t in keep + list(outputs.values()):
                t.record_stream(stream)
        return outputs

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Copy numpy inputs to the GPU, run, and return numpy outputs keyed by output name."""
        dev = {
            n: torch.from_numpy(np.ascontiguousarray(feed[n])).to(self.device)
            for n in self.input_names
            if n in feed
        }
        outs = self.infer_torch(dev)
        self._stream.synchronize()
        return {n: t.cpu().numpy() for n, t in outs.items()}
