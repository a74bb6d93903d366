"""TensorRT engine build: a pure build plan, an FP16 ONNX converter for TensorRT 11, the builder call, sparsity report.

What has really run, and where (be precise when citing this module):
- `plan_build`, `parse_sparsity_log`, `parse_engine_layers`, `sparse_layer_report` and `convert_onnx_to_fp16` are
  plain Python/onnx/numpy and are unit-tested on the CPU machine (the converter's output is run with onnxruntime CPU).
- `build_engine` has **never run against real TensorRT**: TensorRT cannot be installed on any machine available to
  this project (`../shared/docs/environment.md` §4). Its call sequence follows the TensorRT 10/11 Python API docs and
  is checked only against `tests/unit/deploy/fake_tensorrt.py`, a recording stand-in that proves the wiring (which
  calls, which arguments, which files) and nothing about TensorRT's behaviour. Facts still marked [unverified] in
  `peers.md` §2.5 (SPARSE_WEIGHTS and the workspace pool on 11.x) stay unverified.

Precision strategy (peers.md §2.5):
- TensorRT 10.x: weakly typed network from the FP32 ONNX, `BuilderFlag.FP16` (+ `BuilderFlag.SPARSE_WEIGHTS`).
- TensorRT >= 11: precision flags are gone and networks are strongly typed, so an FP16 ONNX is produced first
  (`convert_onnx_to_fp16`, I/O kept FP32) and parsed into a network created with `STRONGLY_TYPED` (ignored but
  accepted on 11.x); `SPARSE_WEIGHTS` is still requested when sparse.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.artifacts import atomic_write_bytes, sha256_file
from pipeline.config import BuildConfig
from pipeline.errors import BackendUnavailable, MissingArtifactError, PipelineError

log = logging.getLogger(__name__)

TIMING_CACHE_NAME = "timing.cache"
_ELIGIBLE_MARK = "(Sparsity) Layers eligible for sparse math:"
_PICKED_MARK = "(Sparsity) TRT inference plan picked sparse implementation for layers:"


# ---------------------------------------------------------------------------------------------------------
# plan (pure: no tensorrt, no GPU)


@dataclass(frozen=True)
class ProfileSpec:
    """One optimisation-profile entry: the dynamic input and its min/opt/max shapes."""

    input_name: str
    min_shape: tuple[int, ...]
    opt_shape: tuple[int, ...]
    max_shape: tuple[int, ...]


@dataclass(frozen=True)
class BuildPlan:
    """Everything `build_engine` will ask of TensorRT, decided without importing it.

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
    import onnx

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
) -> BuildPlan:
    """Decide flags, precision route, profile and workspace for one engine; reads only the ONNX graph inputs.

    Args:
        trt_version: the TensorRT version the build will run with (`tensorrt.__version__`).
        cfg: the run's build section (precision, min/opt/max batch, workspace_mb).
        onnx_path: the exported model; its H and W fix the profile unless `hw` is given.
        sparse: request sparse-weight tactics (only meaningful for 2:4-hardened weights).
        hw: height and width for inputs exported with symbolic spatial dims.
        timing_cache_path: where `build_engine` loads and saves the timing cache (None: next to the engine).
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
    if major == 10:
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
        if not fp16:
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
        precision=cfg.precision,
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


# ---------------------------------------------------------------------------------------------------------
# FP16 ONNX (needed for TensorRT >= 11; also usable for ONNX Runtime CUDA)

# Inputs whose type is tensor(float) whatever the data type T is: they must stay float32.
_FP32_ONLY_INPUTS = {"Resize": {2}, "Upsample": {1}}
_FP16_MAX = 65504.0
_FP16_MIN_SUBNORMAL = 2.0**-24


def _to_fp16(arr: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Cast to float16, clipping magnitudes into range; exact zeros stay zero (2:4 patterns survive)."""
    a = np.asarray(arr, dtype=np.float64)
    big = np.abs(a) > _FP16_MAX
    small = (a != 0) & (np.abs(a) < _FP16_MIN_SUBNORMAL)
    a = np.where(big, np.sign(a) * _FP16_MAX, a)
    a = np.where(small, np.sign(a) * _FP16_MIN_SUBNORMAL, a)
    return a.astype(np.float16), int(big.sum()), int(small.sum())


def convert_onnx_to_fp16(
    in_path: str | Path, out_path: str | Path, keep_io_types: bool = True
) -> dict[str, Any]:
    """Write an FP16 copy of an FP32 ONNX model: float32 initializers/constants -> float16, Casts retargeted.

    With `keep_io_types` the graph inputs and outputs stay float32: a Cast to float16 follows each float input
    and a Cast back to float32 produces each float output, so callers feed and read float32 as before.
    Scales of Resize/Upsample stay float32 (the ONNX spec types them tensor(float)). Values beyond the float16
    range are clipped to +-65504 and nonzero magnitudes below 2**-24 are raised to 2**-24; zeros stay zero.
    Control-flow subgraphs (If/Loop/Scan) are refused. Shape arithmetic that goes through float (Cast to float,
    Mul, Cast back) becomes float16 and is exact only for integers up to 2048.

    Returns:
        Conversion counts: initializers, constants, casts retargeted, inputs/outputs wrapped, values clipped.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    src, dst = Path(in_path), Path(out_path)
    if not src.exists():
        raise MissingArtifactError(f"ONNX model {src} does not exist")
    model = onnx.load(str(src))
    g = model.graph
    for node in g.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise PipelineError(
                f"convert_onnx_to_fp16 does not handle control flow ({node.op_type} '{node.name}')"
            )
    F32, F16 = TensorProto.FLOAT, TensorProto.FLOAT16
    stats = {
        "initializers": 0,
        "constants": 0,
        "casts": 0,
        "inputs_wrapped": 0,
        "outputs_wrapped": 0,
        "clipped_large": 0,
        "raised_small": 0,
        "kept_fp32": [],
    }

    keep32 = {n.input[i] for n in g.node for i in _FP32_ONLY_INPUTS.get(n.op_type, ()) if i < len(n.input)}
    fp16_uses = {
        name
        for n in g.node
        for i, name in enumerate(n.input)
        if i not in _FP32_ONLY_INPUTS.get(n.op_type, ())
    } | {o.name for o in g.output}

    new_inits = []
    for init in g.initializer:
        if init.data_type != F32:
            continue
        arr = numpy_helper.to_array(init)
        half, big, small = _to_fp16(arr)
        stats["clipped_large"] += big
        stats["raised_small"] += small
        if init.name in keep32:
            stats["kept_fp32"].append(init.name)
            if init.name in fp16_uses:  # shared by a float32-only slot and ordinary ones: add a float16 twin
                twin = f"{init.name}__fp16"
                new_inits.append(numpy_helper.from_array(half, twin))
                for n in g.node:
                    for i, name in enumerate(n.input):
                        if name == init.name and i not in _FP32_ONLY_INPUTS.get(n.op_type, ()):
                            n.input[i] = twin
            continue
        init.CopyFrom(numpy_helper.from_array(half, init.name))
        stats["initializers"] += 1
    g.initializer.extend(new_inits)

    for node in g.node:
        out_name = node.output[0] if node.output else ""
        if out_name in keep32:
            continue
        if node.op_type in ("Constant", "ConstantOfShape"):
            for a in node.attribute:
                if a.name == "value" and a.t.data_type == F32:
                    half, _, _ = _to_fp16(numpy_helper.to_array(a.t))
                    a.t.CopyFrom(numpy_helper.from_array(half, a.t.name))
                    stats["constants"] += 1
                elif a.name in ("value_float", "value_floats"):
                    half, _, _ = _to_fp16(np.array(a.f if a.name == "value_float" else list(a.floats)))
                    node.attribute.remove(a)
                    node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(half)))
                    stats["constants"] += 1
                    break
        elif node.op_type == "Cast":
            for a in node.attribute:
                if a.name == "to" and a.i == F32:
                    a.i = F16
                    stats["casts"] += 1

    head, tail = [], []
    for inp in g.input:
        if inp.type.tensor_type.elem_type != F32 or inp.name in {i.name for i in g.initializer}:
            continue
        if keep_io_types:
            inner = f"{inp.name}__fp16"
            for n in g.node:
                for i, name in enumerate(n.input):
                    if name == inp.name:
                        n.input[i] = inner
            head.append(helper.make_node("Cast", [inp.name], [inner], to=F16, name=f"{inp.name}__cast_fp16"))
            stats["inputs_wrapped"] += 1
        else:
            inp.type.tensor_type.elem_type = F16
    for out in g.output:
        if out.type.tensor_type.elem_type != F32:
            continue
        if keep_io_types:
            inner = f"{out.name}__fp16"
            for n in g.node:
                for i, name in enumerate(n.output):
                    if name == out.name:
                        n.output[i] = inner
                for i, name in enumerate(n.input):
                    if name == out.name:
                        n.input[i] = inner
            tail.append(helper.make_node("Cast", [inner], [out.name], to=F32, name=f"{out.name}__cast_fp32"))
            stats["outputs_wrapped"] += 1
        else:
            out.type.tensor_type.elem_type = F16
    nodes = head + list(g.node) + tail
    del g.node[:]
    g.node.extend(nodes)
    # Stale float32 annotations on intermediate tensors would contradict the new types; let tools re-infer them.
    kept_vi = [vi for vi in g.value_info if vi.type.tensor_type.elem_type != F32]
    del g.value_info[:]
    g.value_info.extend(kept_vi)
    onnx.checker.check_model(model)
    _atomic_save_onnx(model, dst)
    return stats


def _atomic_save_onnx(model: Any, dst: Path) -> None:
    import onnx

    dst.parent.mkdir(parents=True, exist_ok=True)
    large = model.ByteSize() > 1_800_000_000  # protobuf's 2 GB limit: keep weights in a side file
    tmp = dst.with_name(dst.name + ".tmp")
    onnx.save(model, str(tmp), save_as_external_data=large, location=dst.name + ".data" if large else None)
    os.replace(tmp, dst)


# ---------------------------------------------------------------------------------------------------------
# log and inspector parsing (pure)


def _split_layers(text: str) -> list[str]:
    return [s.strip() for s in text.split(", ") if s.strip()]


def parse_sparsity_log(lines: Iterable[str]) -> dict[str, Any]:
    """Extract the builder's two sparsity lines (any prefix such as "[I] [TRT] " allowed; last occurrence wins).

    Returns:
        {"eligible": [...], "picked": [...], "eligible_logged": bool, "picked_logged": bool}; entries are TensorRT
        layer names, fused ones joined with " + " as TensorRT prints them.
    """
    out: dict[str, Any] = {"eligible": [], "picked": [], "eligible_logged": False, "picked_logged": False}
    for line in lines:
        for mark, key in ((_ELIGIBLE_MARK, "eligible"), (_PICKED_MARK, "picked")):
            pos = line.find(mark)
            if pos >= 0:
                out[key] = _split_layers(line[pos + len(mark) :].strip())
                out[f"{key}_logged"] = True
    return out


def parse_engine_layers(info_json: str) -> list[dict[str, Any]]:
    """Per-layer name, type, tactic and sparsity hints from `get_engine_information(LayerInformationFormat.JSON)`.

    Handles DETAILED output (layers are objects with "Name", "LayerType", "TacticName", "HasSparseWeights") and
    LAYER_NAMES_ONLY output (layers are plain strings); the 10.x "Bindings" / 11.x "I/O Tensors" keys are ignored.
    """
    data = json.loads(info_json) if info_json else {}
    layers = data.get("Layers", []) if isinstance(data, dict) else []
    out = []
    for layer in layers:
        if isinstance(layer, str):
            out.append(
                {
                    "name": layer,
                    "type": None,
                    "tactic": None,
                    "has_sparse_weights": None,
                    "sparse_tactic": None,
                }
            )
            continue
        tactic = layer.get("TacticName")
        hsw = layer.get("HasSparseWeights")
        out.append(
            {
                "name": layer.get("Name"),
                "type": layer.get("LayerType") or layer.get("ParameterType"),
                "tactic": tactic,
                "has_sparse_weights": None if hsw is None else bool(int(hsw)),
                "sparse_tactic": None if tactic is None else ("sparse" in str(tactic).lower()),
            }
        )
    return out


def _scope_path(member: str) -> str | None:
    """Module path from a TorchScript-exporter node name: "/layer3/layer3.0/conv1/Conv" -> "layer3.0.conv1"."""
    if not member.startswith("/"):
        return None
    parts = [p for p in member.split("/") if p]
    if parts and re.fullmatch(r"[A-Z][A-Za-z0-9]*(_\d+)?", parts[-1]):  # trailing op name: Conv, Relu, Conv_1
        parts = parts[:-1]
    path: list[str] = []
    for p in parts:  # Sequential children repeat their parent: layer3 / layer3.0
        if path and p.startswith(path[-1] + "."):
            path[-1] = p
        else:
            path.append(p)
    return ".".join(path) or None


def _owners_by_name(member: str, layers: list[str]) -> set[str]:
    scope = _scope_path(member)
    if scope:
        hits = {la for la in layers if la == scope or la.endswith("." + scope)}
        if len(hits) == 1:
            return hits
    found = set()
    for la in layers:
        for v in dict.fromkeys([la, la.replace(".", "_"), la.replace(".", "/")]):
            if re.search(r"(?<![A-Za-z0-9])" + re.escape(v) + r"(?![A-Za-z0-9])", member):
                found.add(la)
    return found


def onnx_node_layer_map(onnx_path: str | Path) -> dict[str, str]:
    """ONNX Conv/Gemm/MatMul node name -> module name, from its weight initializer ("backbone.conv1.weight").

    The dynamo exporter names nodes "node_conv2d_3", which carries no module path; TensorRT names its layers after
    these node names, so this map is what lets `sparse_layer_report` attribute TensorRT layers to modules.
    """
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    out = {}
    for n in model.graph.node:
        if n.op_type in ("Conv", "Gemm", "MatMul") and len(n.input) > 1 and n.input[1] in inits and n.name:
            w = n.input[1]
            out[n.name] = w[: -len(".weight")] if w.endswith(".weight") else w
    return out


def sparse_layer_report(
    eligible: list[str],
    picked: list[str],
    hardened_2to4_layers: list[str],
    node_to_layer: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Compare TensorRT's eligible/picked sparse layers with the conv layers the harden stage made 2:4.

    A TensorRT entry (possibly fused, "A + B") is attributed to a hardened layer when one of its members is an ONNX
    node that `node_to_layer` maps to it (most reliable: build it with `onnx_node_layer_map`); otherwise by name:
    a TorchScript-exporter scope ("/layer3/layer3.0/conv1/Conv" -> "layer3.0.conv1") that is a dotted suffix of
    exactly one hardened layer, or the layer's name appearing in the member between non-alphanumeric boundaries
    ("backbone.conv1", "backbone_conv1", "backbone/conv1"). Dynamo-exporter names ("node_conv2d_3") carry no module
    path and match only through `node_to_layer`. "hardened_not_eligible" is the usual symptom of
    weights that are not constants, a wrong 2:4 axis or channel counts TensorRT rejects; "eligible_not_picked" is
    TensorRT finding the dense kernel faster (small C/K, peers.md §2.4).
    """
    node_to_layer = node_to_layer or {}

    def owners(entry: str) -> set[str]:
        found = set()
        for member in (m.strip() for m in entry.split(" + ")):
            mapped = node_to_layer.get(member)
            if mapped is None:  # TensorRT may decorate node names; fall back to containment
                for node, layer in node_to_layer.items():
                    if node and re.search(
                        r"(?<![A-Za-z0-9_])" + re.escape(node) + r"(?![A-Za-z0-9_])", member
                    ):
                        mapped = layer
                        break
            if mapped is not None:
                if mapped in hardened_2to4_layers:
                    found.add(mapped)
                continue
            found.update(_owners_by_name(member, hardened_2to4_layers))
        return found

    eligible_by = {e: owners(e) for e in eligible}
    picked_by = {p: owners(p) for p in picked}
    per_layer = {}
    for layer in hardened_2to4_layers:
        per_layer[layer] = {
            "eligible": any(layer in o for o in eligible_by.values()),
            "picked": any(layer in o for o in picked_by.values()),
            "trt_layers": sorted({e for e, o in eligible_by.items() if layer in o}),
        }
    return {
        "hardened_2to4": len(hardened_2to4_layers),
        "eligible": len(eligible),
        "picked": len(picked),
        "hardened_eligible": sum(v["eligible"] for v in per_layer.values()),
        "hardened_picked": sum(v["picked"] for v in per_layer.values()),
        "per_layer": per_layer,
        "hardened_not_eligible": [k for k, v in per_layer.items() if not v["eligible"]],
        "eligible_not_picked": [k for k, v in per_layer.items() if v["eligible"] and not v["picked"]],
        "eligible_not_hardened": [e for e, o in eligible_by.items() if not o],
        "picked_not_hardened": [p for p, o in picked_by.items() if not o],
    }


# ---------------------------------------------------------------------------------------------------------
# the real build (lazy tensorrt import; never run against real TensorRT here)


def import_tensorrt() -> Any:
    """Import tensorrt or raise BackendUnavailable naming why (see `deploy.environment.tensorrt_skip_reason`)."""
    try:
        import tensorrt as trt
    except Exception as e:  # noqa: BLE001 - missing package and missing shared libraries read the same to users
        from deploy.environment import probe_gpu_environment

        reason = probe_gpu_environment()["tensorrt"]["error"] or f"{type(e).__name__}: {e}"
        raise BackendUnavailable(f"TensorRT is unavailable: {reason}") from None
    return trt


class _LogSink:
    """Receives TensorRT log lines: writes all to a file, keeps sparsity lines and recent problems in memory."""

    def __init__(self, path: Path | None):
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
    from deploy.environment import probe_gpu_environment

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
        logger = _make_logger(trt, sink)  # must outlive every TensorRT object created from it
        builder = trt.Builder(logger)
        net_flags = 0
        for name in plan.network_flags:
            net_flags |= 1 << int(
                _enum(trt.NetworkDefinitionCreationFlag, name, "NetworkDefinitionCreationFlag", installed)
            )
        network = builder.create_network(net_flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(parse_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise PipelineError(f"TensorRT could not parse {parse_path}: {errors or 'no parser error given'}")
        config = _configure(trt, builder, network, plan)
        cache, cache_loaded = _load_timing_cache(config, cache_path)
        t0 = time.perf_counter()
        serialized = builder.build_serialized_network(network, config)
        build_seconds = time.perf_counter() - t0
        if serialized is None:
            raise PipelineError(
                f"TensorRT failed to build {engine_path.name}: "
                f"{' | '.join(list(sink.problems)[-3:]) or 'no error logged'} (log: {log_file})"
            )
        cache_bytes = bytes(config.get_timing_cache().serialize())
        atomic_write_bytes(cache_path, cache_bytes)
        engine_bytes = bytes(serialized)
        atomic_write_bytes(engine_path, engine_bytes)
        inspector = _inspect(trt, logger, engine_bytes, engine_path)
    finally:
        sink.close()

    sparsity = parse_sparsity_log(sink.sparsity)
    sidecar = {
        "engine": engine_path.name,
        "engine_sha256": hashlib.sha256(engine_bytes).hexdigest(),
        "engine_bytes": len(engine_bytes),
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
        "build_seconds": round(build_seconds, 3),
        "timing_cache": {
            "path": str(cache_path),
            "loaded_bytes": cache_loaded,
            "saved_bytes": len(cache_bytes),
        },
        "log": str(log_file),
        "log_lines": sink.count,
        "sparsity": sparsity,
        "inspector": inspector,
        "notes": list(plan.notes),
    }
    atomic_write_bytes(
        engine_path.with_name(engine_path.name + ".json"), (json.dumps(sidecar, indent=2) + "\n").encode()
    )
    return sidecar


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
