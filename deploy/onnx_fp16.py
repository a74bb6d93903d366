"""FP16 copy of an FP32 ONNX model, for TensorRT >= 11 (also usable for ONNX Runtime CUDA).

TensorRT 11 dropped the FP16 builder flag and builds strongly typed networks, so precision has to come from the
ONNX types themselves. Plain onnx/numpy: unit-tested on the CPU machine, its output run with onnxruntime CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pipeline.artifacts import atomic_path
from pipeline.errors import MissingArtifactError, PipelineError

# Inputs whose type is tensor(float) whatever the data type T is: they must stay float32.
_FP32_ONLY_INPUTS = {"Resize": {2}, "Upsample": {1}}
_FP16_MAX = 65504.0
_FP16_MIN_SUBNORMAL = 2.0**-24
F32, F16 = TensorProto.FLOAT, TensorProto.FLOAT16


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
    src, dst = Path(in_path), Path(out_path)
    if not src.exists():
        raise MissingArtifactError(f"ONNX model {src} does not exist")
    model = onnx.load(str(src))
    g = model.graph
    _refuse_control_flow(g)
    stats: dict[str, Any] = {
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
    _convert_initializers(g, keep32, stats)
    _convert_constants_and_casts(g, keep32, stats)
    _wrap_inputs(g, keep_io_types, stats)
    _wrap_outputs(g, keep_io_types, stats)
    # Stale float32 annotations on intermediate tensors would contradict the new types; let tools re-infer them.
    kept_vi = [vi for vi in g.value_info if vi.type.tensor_type.elem_type != F32]
    del g.value_info[:]
    g.value_info.extend(kept_vi)
    onnx.checker.check_model(model)
    _save_onnx(model, dst)
    return stats


def _refuse_control_flow(g: Any) -> None:
    for node in g.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise PipelineError(
                f"convert_onnx_to_fp16 does not handle control flow ({node.op_type} '{node.name}')"
            )


def _convert_initializers(g: Any, keep32: set[str], stats: dict[str, Any]) -> None:
    """float32 initializers -> float16, except those feeding float32-only slots (which get a float16 twin)."""
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
        half, big, small = _to_fp16(numpy_helper.to_array(init))
        stats["clipped_large"] += big
        stats["raised_small"] += small
        if init.name not in keep32:
            init.CopyFrom(numpy_helper.from_array(half, init.name))
            stats["initializers"] += 1
            continue
        stats["kept_fp32"].append(init.name)
        if init.name in fp16_uses:  # shared by a float32-only slot and ordinary ones: add a float16 twin
            twin = f"{init.name}__fp16"
            new_inits.append(numpy_helper.from_array(half, twin))
            for n in g.node:
                for i, name in enumerate(n.input):
                    if name == init.name and i not in _FP32_ONLY_INPUTS.get(n.op_type, ()):
                        n.input[i] = twin
    g.initializer.extend(new_inits)


def _convert_constants_and_casts(g: Any, keep32: set[str], stats: dict[str, Any]) -> None:
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


def _wrap_inputs(g: Any, keep_io_types: bool, stats: dict[str, Any]) -> None:
    """float32 graph inputs: a Cast to float16 after each (keep_io_types), else retyped to float16."""
    inits = {i.name for i in g.initializer}
    head = []
    for inp in g.input:
        if inp.type.tensor_type.elem_type != F32 or inp.name in inits:
            continue
        if not keep_io_types:
            inp.type.tensor_type.elem_type = F16
            continue
        inner = f"{inp.name}__fp16"
        for n in g.node:
            for i, name in enumerate(n.input):
                if name == inp.name:
                    n.input[i] = inner
        head.append(helper.make_node("Cast", [inp.name], [inner], to=F16, name=f"{inp.name}__cast_fp16"))
        stats["inputs_wrapped"] += 1
    nodes = head + list(g.node)
    del g.node[:]
    g.node.extend(nodes)


def _wrap_outputs(g: Any, keep_io_types: bool, stats: dict[str, Any]) -> None:
    """float32 graph outputs: produced by a Cast back to float32 (keep_io_types), else retyped to float16."""
    tail = []
    for out in g.output:
        if out.type.tensor_type.elem_type != F32:
            continue
        if not keep_io_types:
            out.type.tensor_type.elem_type = F16
            continue
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
    g.node.extend(tail)


def _save_onnx(model: Any, dst: Path) -> None:
    large = model.ByteSize() > 1_800_000_000  # protobuf's 2 GB limit: keep weights in a side file
    with atomic_path(dst) as tmp:
        onnx.save(
            model, str(tmp), save_as_external_data=large, location=dst.name + ".data" if large else None
        )
