"""TensorRT engine build: the code that actually calls TensorRT, carrying out a `deploy.tensorrt_plan.BuildPlan`.

`build_engine` has **never run against real TensorRT**: TensorRT cannot be installed on any machine available to
this project. Its call sequence follows the TensorRT 10/11 Python API docs and
is checked only against `tests/unit/deploy/fake_tensorrt.py`, a recording stand-in that proves the wiring (which
calls, which arguments, which files) and nothing about TensorRT's behaviour. Facts still marked [unverified] in
`peers.md` §2.5 (SPARSE_WEIGHTS and the workspace pool on 11.x) stay unverified. The pure parts it relies on
(`deploy.tensorrt_plan`, `deploy.onnx_fp16`, `deploy.tensorrt_logs`) are unit-tested on the CPU machine.

`tensorrt` is imported lazily, so this module imports without it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import deque
from pathlib import Path
from typing import Any

from deploy.environment import probe_gpu_environment
from deploy.onnx_fp16 import convert_onnx_to_fp16
from deploy.tensorrt_logs import parse_engine_layers, parse_sparsity_log
from deploy.tensorrt_plan import BuildPlan, trt_major_version
from pipeline.artifacts import atomic_write_bytes, atomic_write_json, sha256_file
from pipeline.errors import BackendUnavailable, MissingArtifactError, PipelineError

log = logging.getLogger(__name__)

TIMING_CACHE_NAME = "timing.cache"


def import_tensorrt() -> Any:
    """Import tensorrt or raise BackendUnavailable naming why (see `deploy.environment.tensorrt_skip_reason`)."""
    try:
        import tensorrt as trt
    except Exception as e:  # noqa: BLE001 - missing package and missing shared libraries read the same to users
        reason = probe_gpu_environment()["tensorrt"]["error"] or f"{type(e).__name__}: {e}"
        raise BackendUnavailable(f"TensorRT is unavailable: {reason}") from None
    return trt


class _LogSink:
    """Receives TensorRT log lines: writes all to a file, keeps sparsity lines and recent problems in memory."""

    def __init__(self, path: Path | None):
        self.path = path
        self.fh = open(path, "w", encoding="utf-8") if path else None  # noqa: SIM115 - closed in close()
        self.sparsity: list[str] = []
        self.problems: deque[str] = deque(maxlen=30)
        self.count = 0

    def write(self, tag: str, msg: str) -> None:
        self.count += 1
        line = f"[{tag}] {msg}"
        if self.fh:
            self.fh.write(line + "\n")
        if "(Sparsity)" in msg:
            self.sparsity.append(line)
        if tag in ("E", "F", "W"):
            self.problems.append(line)

    def close(self) -> None:
        if self.fh:
            self.fh.close()
            self.fh = None


def _make_logger(trt: Any, sink: _LogSink) -> Any:
    """A `trt.ILogger` subclass feeding `sink` (TensorRT passes every severity, VERBOSE included)."""
    tags = {"INTERNAL_ERROR": "F", "ERROR": "E", "WARNING": "W", "INFO": "I", "VERBOSE": "V"}

    class CapturingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            name = getattr(severity, "name", str(severity)).split(".")[-1]
            tag = tags.get(name, "?")
            sink.write(tag, msg)
            if tag in ("E", "F"):
                log.error("TensorRT: %s", msg)

    return CapturingLogger()


def _enum(trt_enum: Any, name: str, what: str, trt_version: str) -> Any:
    try:
        return getattr(trt_enum, name)
    except AttributeError:
        raise BackendUnavailable(
            f"TensorRT {trt_version} has no {what}.{name}; re-plan with plan_build(tensorrt.__version__, ...)"
        ) from None


def _gpu_identity() -> dict[str, Any] | None:
    gpu = probe_gpu_environment()["gpu"]
    return None if gpu is None else {"name": gpu["name"], "sm": gpu["sm"]}


def _configure(trt: Any, builder: Any, network: Any, plan: BuildPlan) -> Any:
    config = builder.create_builder_config()
    for name in plan.builder_flags:
        config.set_flag(_enum(trt.BuilderFlag, name, "BuilderFlag", plan.trt_version))
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_bytes)
    config.profiling_verbosity = _enum(
        trt.ProfilingVerbosity, plan.profiling_verbosity, "ProfilingVerbosity", plan.trt_version
    )
    net_inputs = {network.get_input(i).name for i in range(network.num_inputs)}
    profile = builder.create_optimization_profile()
    for p in plan.profiles:
        if p.input_name not in net_inputs:
            raise PipelineError(
                f"plan profiles input '{p.input_name}' but the network inputs are {sorted(net_inputs)}"
            )
        profile.set_shape(p.input_name, p.min_shape, p.opt_shape, p.max_shape)
    config.add_optimization_profile(profile)
    return config


def _load_timing_cache(config: Any, path: Path) -> tuple[Any, int]:
    prev = path.read_bytes() if path.exists() else b""
    cache = config.create_timing_cache(prev)
    # positional (cache, ignore_mismatch): a cache from another GPU or TensorRT version is refused, not reused
    if not config.set_timing_cache(cache, False):
        log.warning("timing cache %s does not match this GPU/TensorRT; starting a fresh one", path)
        prev = b""
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)
    return cache, len(prev)


def build_engine(
    plan: BuildPlan,
    onnx_path: str | Path,
    engine_path: str | Path,
    timing_cache_path: str | Path | None = None,
    log_path: str | Path | None = None,
) -> dict[str, Any]:
    """Build and serialise one engine as `plan` says; write the engine, timing cache, log and a sidecar JSON.

    The engine is written atomically (temp file + rename); the sidecar `<engine>.json` records TensorRT version,
    GPU, flags, profile, workspace, source ONNX sha256, build seconds, the builder's sparse eligible/picked layers
    and per-layer inspector hints, and is also returned. The timing cache is read from and written back to
    `timing_cache_path` (else `plan.timing_cache_path`, else `timing.cache` beside the engine). On TensorRT >= 11
    the FP16 ONNX that was actually parsed is kept beside the engine as `<engine stem>.fp16.onnx`.

    Raises:
        BackendUnavailable: tensorrt cannot be imported, or lacks a flag the plan asks for.
        MissingArtifactError: the ONNX file does not exist.
        PipelineError: the parser or builder failed (message carries TensorRT's last errors; see the log).
    """
    trt = import_tensorrt()
    installed = str(getattr(trt, "__version__", "?"))
    if trt_major_version(installed) != plan.trt_major:
        raise PipelineError(
            f"plan was made for TensorRT {plan.trt_version} but {installed} is installed; "
            "call plan_build(tensorrt.__version__, ...) again"
        )
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.exists():
        raise MissingArtifactError(f"ONNX model {onnx_path} does not exist; run `pipeline run export` first")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    cache_path = Path(timing_cache_path or plan.timing_cache_path or engine_path.parent / TIMING_CACHE_NAME)
    log_file = Path(log_path) if log_path else engine_path.with_name(engine_path.name + ".build.log")
    parse_path, fp16_stats = onnx_path, None
    if plan.convert_to_fp16_onnx:
        parse_path = engine_path.with_name(engine_path.stem + ".fp16.onnx")
        fp16_stats = convert_onnx_to_fp16(onnx_path, parse_path, keep_io_types=True)

    sink = _LogSink(log_file)
    try:
        built = _build_serialized(trt, plan, parse_path, engine_path, cache_path, sink)
    finally:
        sink.close()

    sparsity = parse_sparsity_log(sink.sparsity)
    sidecar = {
        "engine": engine_path.name,
        "engine_sha256": hashlib.sha256(built["engine_bytes"]).hexdigest(),
        "engine_bytes": len(built["engine_bytes"]),
        "tensorrt_version": installed,
        "gpu": _gpu_identity(),
        "strategy": plan.strategy,
        "precision": plan.precision,
        "sparse": plan.sparse,
        "flags": list(plan.builder_flags),
        "network_flags": list(plan.network_flags),
        "profile": plan.to_dict()["profiles"],
        "workspace_bytes": plan.workspace_bytes,
        "source_onnx": str(onnx_path),
        "source_onnx_sha256": sha256_file(onnx_path),
        "parsed_onnx": str(parse_path),
        "parsed_onnx_sha256": sha256_file(parse_path),
        "fp16_conversion": fp16_stats,
        "build_seconds": round(built["build_seconds"], 3),
        "timing_cache": {
            "path": str(cache_path),
            "loaded_bytes": built["cache_loaded"],
            "saved_bytes": len(built["cache_bytes"]),
        },
        "log": str(log_file),
        "log_lines": sink.count,
        "sparsity": sparsity,
        "inspector": built["inspector"],
        "notes": list(plan.notes),
    }
    atomic_write_json(engine_path.with_name(engine_path.name + ".json"), sidecar)
    return sidecar


def _build_serialized(
    trt: Any, plan: BuildPlan, parse_path: Path, engine_path: Path, cache_path: Path, sink: _LogSink
) -> dict[str, Any]:
    """Parse, configure, build; write the engine and timing cache; inspect. Returns bytes, timings, inspector."""
    logger = _make_logger(trt, sink)  # must outlive every TensorRT object created from it
    builder = trt.Builder(logger)
    net_flags = 0
    for name in plan.network_flags:
        flag = _enum(trt.NetworkDefinitionCreationFlag, name, "NetworkDefinitionCreationFlag", plan.trt_version)
        net_flags |= 1 << int(flag)
    network = builder.create_network(net_flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(parse_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise PipelineError(f"TensorRT could not parse {parse_path}: {errors or 'no parser error given'}")
    config = _configure(trt, builder, network, plan)
    _, cache_loaded = _load_timing_cache(config, cache_path)
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    build_seconds = time.perf_counter() - t0
    if serialized is None:
        raise PipelineError(
            f"TensorRT failed to build {engine_path.name}: "
            f"{' | '.join(list(sink.problems)[-3:]) or 'no error logged'} (log: {sink.path})"
        )
    cache_bytes = bytes(config.get_timing_cache().serialize())
    atomic_write_bytes(cache_path, cache_bytes)
    engine_bytes = bytes(serialized)
    atomic_write_bytes(engine_path, engine_bytes)
    return {
        "engine_bytes": engine_bytes,
        "cache_bytes": cache_bytes,
        "cache_loaded": cache_loaded,
        "build_seconds": build_seconds,
        "inspector": _inspect(trt, logger, engine_bytes, engine_path),
    }


def _inspect(trt: Any, logger: Any, engine_bytes: bytes, engine_path: Path) -> dict[str, Any]:
    """Deserialize the fresh engine and save the inspector's JSON; failures are recorded, not raised."""
    layers_file = engine_path.with_name(engine_path.name + ".layers.json")
    try:
        runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(engine_bytes)
        info = engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON)
        atomic_write_bytes(layers_file, str(info).encode())
        layers = parse_engine_layers(str(info))
    except Exception as e:  # noqa: BLE001 - inspection is diagnostic; the engine is already saved
        log.warning("engine inspection failed: %s", e)
        return {"error": f"{type(e).__name__}: {e}"}
    return {
        "file": str(layers_file),
        "layers": len(layers),
        "has_sparse_weights": [la["name"] for la in layers if la["has_sparse_weights"]],
        "sparse_tactics": [la["name"] for la in layers if la["sparse_tactic"]],
    }
