"""The TensorRT build plan: which flags, precision route, profile and workspace an engine build will use.

Kept free of any `tensorrt` import so the decisions can be unit-tested and recorded on machines without TensorRT
or a GPU; `deploy.tensorrt_build.build_engine` then carries the plan out.

Precision strategy (peers.md §2.5):
- TensorRT 10.x: weakly typed network from the FP32 ONNX, `BuilderFlag.FP16` (+ `BuilderFlag.SPARSE_WEIGHTS`).
- TensorRT >= 11: precision flags are gone and networks are strongly typed, so an FP16 ONNX is produced first
  (`deploy.onnx_fp16.convert_onnx_to_fp16`, I/O kept FP32) and parsed into a network created with
  `STRONGLY_TYPED` (ignored but accepted on 11.x); `SPARSE_WEIGHTS` is still requested when sparse.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from pipeline.config import BuildConfig
from pipeline.errors import MissingArtifactError, PipelineError


@dataclass(frozen=True)
class ProfileSpec:
    """One optimisation-profile entry: the dynamic input and its min/opt/max shapes."""

    input_name: str
    min_shape: tuple[int, ...]
    opt_shape: tuple[int, ...]
    max_shape: tuple[int, ...]


@dataclass(frozen=True)
class BuildPlan:
    """Everything `deploy.tensorrt_build.build_engine` will ask of TensorRT, decided without importing it.

    `builder_flags` and `network_flags` are member names of `trt.BuilderFlag` and
    `trt.NetworkDefinitionCreationFlag`; `strategy` is one of "fp16_builder_flag" (TRT 10), "strongly_typed_fp16_onnx"
    (TRT >= 11), "fp32" (TRT 10, FP32/TF32) or "strongly_typed_fp32" (TRT >= 11).
    """

    trt_version: str
    trt_major: int
    precision: str
    strategy: str
    sparse: bool
    strongly_typed: bool
    convert_to_fp16_onnx: bool
    builder_flags: tuple[str, ...]
    network_flags: tuple[str, ...]
    profiles: tuple[ProfileSpec, ...]
    workspace_bytes: int
    timing_cache_path: str | None
    profiling_verbosity: str = "DETAILED"
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["profiles"] = [
            {
                "input": p.input_name,
                "min": list(p.min_shape),
                "opt": list(p.opt_shape),
                "max": list(p.max_shape),
            }
            for p in self.profiles
        ]
        return d


def trt_major_version(version: str) -> int:
    """Major number of a TensorRT version string ("10.13.0.35" -> 10); PipelineError when unparseable."""
    m = re.match(r"\s*(\d+)\.", str(version) + ".")
    if not m:
        raise PipelineError(
            f"cannot read a TensorRT major version from {version!r}; expected e.g. '10.13.0.35'"
        )
    return int(m.group(1))


def onnx_input_shapes(onnx_path: str | Path) -> dict[str, list[int | str]]:
    """Graph inputs (initializers excluded) -> dims, a dim_param name (str) where a dim is symbolic."""
    path = Path(onnx_path)
    if not path.exists():
        raise MissingArtifactError(f"ONNX model {path} does not exist; run `pipeline run export` first")
    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    shapes: dict[str, list[int | str]] = {}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dims = inp.type.tensor_type.shape.dim
        shapes[inp.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
    return shapes


def _profile_for(
    name: str, dims: list[int | str], cfg: BuildConfig, hw: tuple[int, int] | None
) -> ProfileSpec:
    if len(dims) != 4:
        raise PipelineError(
            f"ONNX input '{name}' has shape {dims}; expected [batch, channels, height, width]"
        )
    batch, ch, h, w = dims
    if isinstance(ch, str):
        raise PipelineError(
            f"ONNX input '{name}' has a symbolic channel dim '{ch}'; re-export with fixed channels"
        )
    if isinstance(batch, int) and not (batch == cfg.min_batch == cfg.max_batch):
        raise PipelineError(
            f"ONNX input '{name}' has a fixed batch of {batch} but build.min_batch..max_batch is "
            f"{cfg.min_batch}..{cfg.max_batch}; re-export with a dynamic batch axis or set all three to {batch}"
        )
    if hw is not None:
        h, w = hw
    if isinstance(h, str) or isinstance(w, str):
        raise PipelineError(
            f"ONNX input '{name}' has symbolic height/width ({h}, {w}); pass hw=(H, W) to plan_build "
            "(e.g. data.height, data.width)"
        )
    return ProfileSpec(name, (cfg.min_batch, ch, h, w), (cfg.opt_batch, ch, h, w), (cfg.max_batch, ch, h, w))


def plan_build(
    trt_version: str,
    cfg: BuildConfig,
    onnx_path: str | Path,
    sparse: bool,
    *,
    hw: tuple[int, int] | None = None,
    timing_cache_path: str | Path | None = None,
    int8: bool = False,
) -> BuildPlan:
    """Decide flags, precision route, profile and workspace for one engine; reads only the ONNX graph inputs.

    Args:
        trt_version: the TensorRT version the build will run with (`tensorrt.__version__`).
        cfg: the run's build section (precision, min/opt/max batch, workspace_mb).
        onnx_path: the exported model; its H and W fix the profile unless `hw` is given.
        sparse: request sparse-weight tactics (only meaningful for 2:4-hardened weights).
        hw: height and width for inputs exported with symbolic spatial dims.
        timing_cache_path: where `build_engine` loads and saves the timing cache (None: next to the engine).
        int8: the ONNX is a QDQ int8 model (the quantize stage's): explicit quantization, the Q/DQ scales decide
            which layers run int8; on TensorRT 10 FP16 is allowed for the rest (fallback), on >= 11 the
            strongly typed network keeps the ONNX's own types (fp32 outside the Q/DQ pairs).
    """
    major = trt_major_version(trt_version)
    if major < 10:
        raise PipelineError(
            f"TensorRT {trt_version} is not supported; this project builds with TensorRT 10.x or 11.x"
        )
    fp16 = cfg.precision == "fp16"
    notes: list[str] = []
    flags: list[str] = []
    net_flags: list[str] = []
    if int8:
        strongly_typed, convert = major >= 11, False
        strategy = "int8_qdq_fp16_fallback" if major == 10 else "strongly_typed_int8_qdq"
        if major == 10:
            flags += ["INT8", "FP16"]  # INT8 for the Q/DQ layers, FP16 for everything else
        else:
            net_flags.append("STRONGLY_TYPED")
            notes.append(f"TensorRT {major}.x: explicit quantization from the QDQ ONNX; no FP16 fallback flag")
    elif major == 10:
        strongly_typed, convert = False, False
        strategy = "fp16_builder_flag" if fp16 else "fp32"
        if fp16:
            flags.append("FP16")
    else:
        strongly_typed, convert = True, fp16
        net_flags.append("STRONGLY_TYPED")
        strategy = "strongly_typed_fp16_onnx" if fp16 else "strongly_typed_fp32"
        notes.append(
            f"TensorRT {major}.x has no precision builder flags; precision comes from the ONNX types"
        )
    if sparse:
        flags.append("SPARSE_WEIGHTS")
        if not (fp16 or int8):
            notes.append(
                "SPARSE_WEIGHTS is only used with FP16/INT8; an FP32/TF32 engine will pick no sparse tactic"
            )
        if major >= 11:
            notes.append(
                "SPARSE_WEIGHTS on TensorRT 11.x is not in the removed-API tables but is unverified here"
            )
    shapes = onnx_input_shapes(onnx_path)
    if not shapes:
        raise PipelineError(f"ONNX model {onnx_path} has no graph inputs")
    profiles = tuple(_profile_for(n, d, cfg, hw) for n, d in shapes.items())
    return BuildPlan(
        trt_version=str(trt_version),
        trt_major=major,
        precision="int8" if int8 else cfg.precision,
        strategy=strategy,
        sparse=bool(sparse),
        strongly_typed=strongly_typed,
        convert_to_fp16_onnx=convert,
        builder_flags=tuple(flags),
        network_flags=tuple(net_flags),
        profiles=profiles,
        workspace_bytes=int(cfg.workspace_mb) * 1024 * 1024,
        timing_cache_path=None if timing_cache_path is None else str(timing_cache_path),
        notes=tuple(notes),
    )
