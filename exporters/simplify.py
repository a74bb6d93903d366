"""Simplify an exported ONNX graph with onnxsim or onnxslim, keeping what the pipeline relies on.

Guarantees after `simplify_onnx` returns: the input and output names are unchanged, a symbolic batch axis is
still symbolic, every metadata_props entry of the input is present with its value (onnxsim 0.8 adds ~20
`onnxsim.*` bookkeeping entries, which are dropped), and `onnx.checker.check_model(full_check=True)` passes.
Both tools are imported only when chosen, so neither is a hard dependency.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import onnx

from exporters.fileio import save_onnx
from exporters.metadata import read_metadata, write_metadata
from pipeline.artifacts import staged_output
from pipeline.errors import BackendUnavailable, CheckFailed, PipelineError

SimplifierName = Literal["onnxsim", "onnxslim", "none"]


def _run_onnxsim(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    try:
        import onnxsim
    except ImportError:
        raise BackendUnavailable(
            "simplifier 'onnxsim' is not installed; fix: pip install onnxsim (or set export.simplifier=onnxslim)"
        ) from None
    simplified, check_ok = onnxsim.simplify(model)
    if not check_ok:
        raise CheckFailed(
            "onnxsim's own output check failed on the simplified model; set export.simplifier=onnxslim"
        )
    return simplified, str(onnxsim.__version__).lstrip("v")


def _run_onnxslim(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    try:
        import onnxslim
    except ImportError:
        raise BackendUnavailable(
            "simplifier 'onnxslim' is not installed; fix: pip install onnxslim (or set export.simplifier=onnxsim)"
        ) from None
    return onnxslim.slim(model), str(onnxslim.__version__)


def _run_none(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    return model, ""


SIMPLIFIERS: dict[str, Callable[[onnx.ModelProto], tuple[onnx.ModelProto, str]]] = {
    "onnxsim": _run_onnxsim,
    "onnxslim": _run_onnxslim,
    "none": _run_none,
}


def op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    """Count top-level graph nodes per op type, sorted by op name."""
    return dict(sorted(Counter(n.op_type for n in model.graph.node).items()))


def _io_signature(model: onnx.ModelProto) -> tuple[list[str], list[str], bool]:
    """Input names, output names, and whether the first input's first dim is symbolic."""
    graph = model.graph
    dims = graph.input[0].type.tensor_type.shape.dim if graph.input else []
    symbolic = bool(dims) and bool(dims[0].dim_param) and not dims[0].HasField("dim_value")
    return [i.name for i in graph.input], [o.name for o in graph.output], symbolic


def simplify_onnx(
    in_path: str | Path, out_path: str | Path, tool: SimplifierName = "onnxsim"
) -> dict[str, Any]:
    """Simplify `in_path` into `out_path` (may be the same file), then re-validate the result.

    Args:
        in_path: Exported ONNX file.
        out_path: Destination, written atomically after the checks pass.
        tool: "onnxsim", "onnxslim", or "none" (copy plus checks).

    Returns:
        `{"tool", "version", "nodes_before", "nodes_after", "ops_before", "ops_after",
        "metadata_reattached", "dynamic_batch", "seconds"}`; `metadata_reattached` lists the keys the
        tool had dropped or changed.

    Raises:
        PipelineError: For an unknown tool.
        BackendUnavailable: If the chosen tool is not installed.
        CheckFailed: If the tool changed the I/O names or froze the batch axis, or its own check failed.
    """
    if tool not in SIMPLIFIERS:
        raise PipelineError(f"Unknown simplifier '{tool}'. Available: {', '.join(sorted(SIMPLIFIERS))}")
    model = onnx.load(str(in_path))
    # Everything about the input is captured before the tool runs, since a tool may edit its argument.
    meta_before = read_metadata(model)
    ops_before = op_histogram(model)
    nodes_before = len(model.graph.node)
    io_before = _io_signature(model)

    start = time.perf_counter()
    simplified, version = SIMPLIFIERS[tool](model)
    seconds = time.perf_counter() - start

    meta_after = read_metadata(simplified)
    reattached = sorted(k for k, v in meta_before.items() if meta_after.get(k) != v)
    props = dict(meta_before)
    if tool != "none":
        props["simplifier"] = f"{tool} {version}"
    write_metadata(simplified, props, drop_prefixes=("onnxsim.",))
    _check_io(io_before, _io_signature(simplified), tool)

    with staged_output(out_path) as staged:
        save_onnx(simplified, staged)
        # The path form lets the checker handle external data and models over 2 GB.
        onnx.checker.check_model(str(staged), full_check=True)
    return {
        "tool": tool,
        "version": version or None,
        "nodes_before": nodes_before,
        "nodes_after": len(simplified.graph.node),
        "ops_before": ops_before,
        "ops_after": op_histogram(simplified),
        "metadata_reattached": reattached,
        "dynamic_batch": io_before[2],
        "seconds": round(seconds, 3),
    }


def _check_io(
    before: tuple[list[str], list[str], bool], after: tuple[list[str], list[str], bool], tool: str
) -> None:
    if before[:2] != after[:2]:
        raise CheckFailed(f"{tool} changed the graph I/O from {before[:2]} to {after[:2]}")
    if before[2] and not after[2]:
        raise CheckFailed(f"{tool} froze the dynamic batch axis of input '{before[0][0]}'")
