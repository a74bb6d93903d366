"""Test double for the `tensorrt` Python module: a recording fake for unit tests on machines without TensorRT.

It proves nothing about TensorRT itself: no network is optimised, no kernel runs, and whether real TensorRT accepts
these calls (names, argument types, enum values, flag semantics on 10.x vs 11.x) is NOT checked here beyond what
the stand-in mimics from the documentation. What it does prove is our wiring: which calls our code makes, in which
order, with which arguments, and what we do with the results (files written, logs parsed, addresses filled).

Use `make_fake_tensorrt("10.13.0.35")` or `make_fake_tensorrt("11.4.0.106")` and install the module with
`monkeypatch.setitem(sys.modules, "tensorrt", fake)`. Differences mimicked between majors: 11.x has no
`BuilderFlag.FP16/INT8/BF16/FP8/...` and `NetworkDefinitionCreationFlag` has no `EXPLICIT_BATCH`.

The "engine" it serialises is `b"FAKEENGINE" + JSON` describing I/O; its execution context reads float32 inputs
from the addresses it was given and writes outputs there with ctypes: output channel k of every output is
`(k + 1) * mean over input channels`. Tests use this to check buffer addresses, shapes and dtypes end to end.
"""

from __future__ import annotations

import ctypes
import enum
import json
import types
from typing import Any

import numpy as np

ENGINE_MAGIC = b"FAKEENGINE"


def fake_engine_bytes(
    inputs: dict[str, tuple[int, ...]],
    outputs: dict[str, int],
    profile: tuple[int, int, int] = (1, 8, 16),
    layers: list[dict] | None = None,
) -> bytes:
    """Serialized fake engine: inputs name -> (C, H, W), outputs name -> channels, batch profile (min, opt, max)."""
    spec = {
        "inputs": {k: list(v) for k, v in inputs.items()},
        "outputs": outputs,
        "profile": list(profile),
        "layers": layers or [],
    }
    return ENGINE_MAGIC + json.dumps(spec).encode()


def make_fake_tensorrt(version: str = "10.13.0.35") -> types.ModuleType:
    major = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.__file__ = "<fake tensorrt>"
    trt.calls = []  # (call name, args...) in order
    trt.settings = {"eligible": None, "picked": None, "fail_build": False, "parse_errors": []}
    rec = trt.calls.append

    flags = [
        "DEBUG",
        "GPU_FALLBACK",
        "REFIT",
        "DISABLE_TIMING_CACHE",
        "TF32",
        "SPARSE_WEIGHTS",
        "SAFETY_SCOPE",
        "VERSION_COMPATIBLE",
        "EXCLUDE_LEAN_RUNTIME",
        "STRIP_PLAN",
        "WEIGHT_STREAMING",
    ]
    if major < 11:
        flags += [
            "FP16",
            "INT8",
            "BF16",
            "FP8",
            "INT4",
            "OBEY_PRECISION_CONSTRAINTS",
            "PREFER_PRECISION_CONSTRAINTS",
        ]
    trt.BuilderFlag = enum.IntEnum("BuilderFlag", flags)
    net_flags = ["EXPLICIT_BATCH", "STRONGLY_TYPED"] if major < 11 else ["STRONGLY_TYPED"]
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", net_flags, start=0)
    trt.MemoryPoolType = enum.IntEnum(
        "MemoryPoolType", ["WORKSPACE", "DLA_MANAGED_SRAM", "TACTIC_DRAM"], start=0
    )
    trt.ProfilingVerbosity = enum.IntEnum(
        "ProfilingVerbosity", ["LAYER_NAMES_ONLY", "NONE", "DETAILED"], start=0
    )
    trt.LayerInformationFormat = enum.IntEnum("LayerInformationFormat", ["ONELINE", "JSON"], start=0)
    trt.TensorIOMode = enum.IntEnum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"], start=0)
    trt.DataType = enum.IntEnum("DataType", ["FLOAT", "HALF", "INT8", "INT32", "BOOL", "INT64"], start=0)
    Severity = enum.IntEnum("Severity", ["INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"], start=0)

    class ILogger:
        def __init__(self) -> None:
            self.min_severity = Severity.VERBOSE

        def log(self, severity: Any, msg: str) -> None:  # overridden by subclasses
            pass

    ILogger.Severity = Severity
    for s in Severity:
        setattr(ILogger, s.name, s)

    class Logger(ILogger):
        def __init__(self, min_severity: Any = Severity.WARNING) -> None:
            super().__init__()
            self.min_severity = min_severity

    trt.ILogger, trt.Logger = ILogger, Logger

    class Tensor:
        def __init__(self, name: str, shape: tuple) -> None:
            self.name, self.shape = name, shape

    class Network:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.inputs: list[Tensor] = []
            self.outputs: dict[str, int] = {}  # name -> channels (dim 1 of the ONNX output)
            self.conv_nodes: list[str] = []
            self.initializer_types: set[str] = set()

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        def get_input(self, i: int) -> Tensor:
            return self.inputs[i]

    class OnnxParser:
        def __init__(self, network: Network, logger: ILogger) -> None:
            rec(("OnnxParser",))
            self.network, self.logger = network, logger
            self.errors: list[str] = []

        def parse_from_file(self, path: str) -> bool:
            import onnx

            rec(("parse_from_file", path))
            self.errors = list(trt.settings["parse_errors"])
            if self.errors:
                return False
            m = onnx.load(path, load_external_data=False)
            inits = {i.name for i in m.graph.initializer}
            for i in m.graph.input:
                if i.name not in inits:
                    dims = tuple(
                        d.dim_value if d.HasField("dim_value") else -1 for d in i.type.tensor_type.shape.dim
                    )
                    self.network.inputs.append(Tensor(i.name, dims))
            for o in m.graph.output:
                dims = o.type.tensor_type.shape.dim
                self.network.outputs[o.name] = dims[1].dim_value if len(dims) > 1 and dims[1].dim_value else 1
            self.network.conv_nodes = [n.name for n in m.graph.node if n.op_type == "Conv"]
            self.network.initializer_types = {
                onnx.TensorProto.DataType.Name(i.data_type) for i in m.graph.initializer
            }
            trt.last_network = self.network
            return True

        @property
        def num_errors(self) -> int:
            return len(self.errors)

        def get_error(self, i: int) -> str:
            return self.errors[i]

    class TimingCache:
        def __init__(self, data: bytes) -> None:
            self.data = bytes(data)

        def serialize(self) -> memoryview:
            return memoryview(self.data + b"|entry")

    class OptimizationProfile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple] = {}

        def set_shape(self, name: str, min: Any, opt: Any, max: Any) -> None:  # noqa: A002 - TensorRT's names
            rec(("profile.set_shape", name, tuple(min), tuple(opt), tuple(max)))
            self.shapes[name] = (tuple(min), tuple(opt), tuple(max))

    class BuilderConfig:
        def __init__(self) -> None:
            self.flags: set[str] = set()
            self.pools: dict[str, int] = {}
            self.profiles: list[OptimizationProfile] = []
            self.cache: TimingCache | None = None
            self._verbosity = trt.ProfilingVerbosity.LAYER_NAMES_ONLY
            trt.last_config = self

        @property
        def profiling_verbosity(self) -> Any:
            return self._verbosity

        @profiling_verbosity.setter
        def profiling_verbosity(self, v: Any) -> None:
            rec(("config.profiling_verbosity", v.name))
            self._verbosity = v

        def set_flag(self, flag: Any) -> None:
            rec(("config.set_flag", flag.name))
            self.flags.add(flag.name)

        def get_flag(self, flag: Any) -> bool:
            return flag.name in self.flags

        def set_memory_pool_limit(self, pool: Any, size: int) -> None:
            rec(("config.set_memory_pool_limit", pool.name, size))
            self.pools[pool.name] = size

        def add_optimization_profile(self, p: OptimizationProfile) -> int:
            rec(("config.add_optimization_profile",))
            self.profiles.append(p)
            return len(self.profiles) - 1

        def create_timing_cache(self, data: bytes) -> TimingCache:
            rec(("config.create_timing_cache", bytes(data)))
            return TimingCache(data)

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            rec(("config.set_timing_cache", ignore_mismatch))
            self.cache = cache
            return True

        def get_timing_cache(self) -> TimingCache | None:
            return self.cache

    class Builder:
        def __init__(self, logger: ILogger) -> None:
            rec(("Builder",))
            self.logger = logger

        def create_network(self, flags: int = 0) -> Network:
            rec(("create_network", flags))
            return Network(flags)

        def create_builder_config(self) -> BuilderConfig:
            return BuilderConfig()

        def create_optimization_profile(self) -> OptimizationProfile:
            return OptimizationProfile()

        def build_serialized_network(self, network: Network, config: BuilderConfig) -> memoryview | None:
            rec(("build_serialized_network",))
            lg = self.logger
            lg.log(Severity.VERBOSE, "fake builder: timing tactics")
            if trt.settings["fail_build"]:
                lg.log(Severity.ERROR, "fake builder: out of workspace")
                return None
            if "SPARSE_WEIGHTS" in config.flags:
                elig = (
                    trt.settings["eligible"] if trt.settings["eligible"] is not None else network.conv_nodes
                )
                picked = trt.settings["picked"] if trt.settings["picked"] is not None else elig[:1]
                lg.log(Severity.INFO, "(Sparsity) Layers eligible for sparse math: " + ", ".join(elig))
                lg.log(
                    Severity.INFO,
                    "(Sparsity) TRT inference plan picked sparse implementation for layers: "
                    + ", ".join(picked),
                )
            prof = config.profiles[0].shapes if config.profiles else {}
            name, (lo, opt, hi) = next(iter(prof.items())) if prof else ("input", ((1,), (1,), (1,)))
            layers = [
                {
                    "Name": n,
                    "LayerType": "CaskConvolution",
                    "HasSparseWeights": int("SPARSE_WEIGHTS" in config.flags),
                    "TacticName": "sm90_xmma_fprop_sparse_conv"
                    if i == 0 and "SPARSE_WEIGHTS" in config.flags
                    else "sm90_xmma_fprop_implicit_gemm",
                }
                for i, n in enumerate(network.conv_nodes)
            ]
            outputs = network.outputs or {"out": 1}
            return memoryview(
                fake_engine_bytes({name: tuple(opt[1:])}, outputs, (lo[0], opt[0], hi[0]), layers)
            )

    class ExecutionContext:
        def __init__(self, engine: Engine) -> None:
            self.engine = engine
            self.shapes: dict[str, tuple] = {}
            self.addresses: dict[str, int] = {}

        def set_input_shape(self, name: str, shape: tuple) -> bool:
            rec(("context.set_input_shape", name, tuple(shape)))
            lo, _, hi = self.engine.spec["profile"]
            if not lo <= shape[0] <= hi or tuple(shape[1:]) != tuple(self.engine.spec["inputs"][name]):
                return False
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name: str) -> tuple:
            if name in self.engine.spec["inputs"]:
                return self.shapes.get(name, (-1, *self.engine.spec["inputs"][name]))
            inp = next(iter(self.engine.spec["inputs"]))
            b, _, h, w = self.shapes.get(inp, (-1, 0, 0, 0))
            return (b, self.engine.spec["outputs"][name], h, w)

        def set_tensor_address(self, name: str, ptr: int) -> bool:
            rec(("context.set_tensor_address", name))
            self.addresses[name] = ptr
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            rec(("context.execute_async_v3", stream_handle))
            inp = next(iter(self.engine.spec["inputs"]))
            shape = self.shapes[inp]
            n = int(np.prod(shape))
            x = np.frombuffer(
                (ctypes.c_float * n).from_address(self.addresses[inp]), dtype=np.float32
            ).reshape(shape)
            base = x.mean(axis=1, keepdims=True)
            for out, ch in self.engine.spec["outputs"].items():
                y = np.ascontiguousarray(
                    np.concatenate([(k + 1) * base for k in range(ch)], axis=1), dtype=np.float32
                )
                ctypes.memmove(self.addresses[out], y.ctypes.data, y.nbytes)
            return True

    class Inspector:
        def __init__(self, engine: Engine) -> None:
            self.engine = engine

        def get_engine_information(self, fmt: Any) -> str:
            rec(("inspector.get_engine_information", fmt.name))
            io_key = "Bindings" if major < 11 else "I/O Tensors"
            return json.dumps({"Layers": self.engine.spec.get("layers", []), io_key: []})

    class Engine:
        def __init__(self, spec: dict) -> None:
            self.spec = spec
            self.names = list(spec["inputs"]) + list(spec["outputs"])

        @property
        def num_io_tensors(self) -> int:
            return len(self.names)

        def get_tensor_name(self, i: int) -> str:
            return self.names[i]

        def get_tensor_mode(self, name: str) -> Any:
            return trt.TensorIOMode.INPUT if name in self.spec["inputs"] else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name: str) -> Any:
            return trt.DataType.FLOAT

        def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[tuple]:
            chw = tuple(self.spec["inputs"][name])
            return [(b, *chw) for b in self.spec["profile"]]

        def create_execution_context(self) -> ExecutionContext:
            rec(("engine.create_execution_context",))
            return ExecutionContext(self)

        def create_engine_inspector(self) -> Inspector:
            return Inspector(self)

    class Runtime:
        def __init__(self, logger: ILogger) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, data: bytes) -> Engine | None:
            rec(("runtime.deserialize_cuda_engine", len(data)))
            data = bytes(data)
            if not data.startswith(ENGINE_MAGIC):
                return None
            return Engine(json.loads(data[len(ENGINE_MAGIC) :]))

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime
    trt.last_config = None
    trt.last_network = None
    return trt
