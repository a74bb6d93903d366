"""Export a dict-returning multitask model to one multi-head ONNX file.

The graph has one input, `image` [batch, 3, H, W] (float32 RGB in [0, 1]), and one output per task named
exactly like the task, in `task_names` order. The batch axis is symbolic (and H/W with `dynamic_hw`).

Exporter facts that shape this module (torch 2.13, docs/environment.md section 3):
- dynamo (`torch.export`) is the default exporter; it wants `dynamic_shapes` with `torch.export.Dim`, raises
  opset 17 to 18 and always writes IR 10; it writes external data unless `external_data=False`; it keeps the
  module path in initializer names (`model.backbone.0.weight`) but names nodes `node_Conv_104`.
- TorchScript (`dynamo=False`) is deprecated but works; it writes IR 8, takes `dynamic_axes`, and names
  BN-folded weights `onnx::Conv_119` while its node names keep the module scope
  (`/model/backbone/backbone.0/Conv`).
- Both fold eval-mode BatchNorm into the preceding Conv (per-output-channel scale: zeros stay zeros).
"""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import onnx
import torch
from torch import nn

from exporters.fileio import LARGE_MODEL_BYTES, save_onnx
from exporters.graph_io import check_graph_io, default_opset, pin_output_dims, rename_hw_dims, tensor_shape
from exporters.metadata import build_metadata, check_extra_keys, write_metadata
from pipeline.artifacts import clear_staging, staged_output
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

INPUT_NAME = "image"
EXPORTERS = ("dynamo", "torchscript")
ExporterName = Literal["dynamo", "torchscript"]


@dataclass(frozen=True)
class ExportInfo:
    """What was actually exported (the content of `export/io_spec.json`).

    `opset`, `ir_version` and `exporter` are read back from the written file, not copied from the request:
    dynamo raises opset 17 to 18, and a dynamo failure falls back to TorchScript (`fallback_reason`).
    Shapes use ints for fixed dims and strings for symbolic ones; `dynamic_axes` maps each tensor to the
    indices of its symbolic dims.
    """

    path: str
    exporter: str
    requested_exporter: str
    fallback_reason: str | None
    opset: int
    ir_version: int
    input_name: str
    input_shape: list[int | str]
    output_names: list[str]
    output_shapes: dict[str, list[int | str]]
    dynamic_axes: dict[str, list[int]]
    max_batch: int
    external_data: bool
    file_bytes: int
    seconds: float
    torch_version: str
    onnx_version: str
    metadata: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return dataclasses.asdict(self)


class TaskTupleAdapter(nn.Module):
    """Present a dict-returning model as a tuple-returning one, in task order.

    ONNX outputs are positional, so the tuple order is what ties output i to the name `task_names[i]`.
    The wrapped model is stored as `model`, which prefixes every dynamo initializer name with `model.`.
    """

    def __init__(self, model: nn.Module, task_names: Sequence[str]):
        super().__init__()
        self.model = model
        self.task_names = tuple(task_names)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(image)
        return tuple(out[t] for t in self.task_names)


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    task_names: Sequence[str],
    example_input: torch.Tensor,
    opset: int = 18,
    exporter: ExporterName = "dynamo",
    dynamic_hw: bool = False,
    max_batch: int = 64,
    metadata: Mapping[str, Any] | None = None,
) -> ExportInfo:
    """Export `model` to `path` with a dynamic batch axis and self-describing metadata.

    The model is put in eval mode for the export and its previous mode restored afterwards. Weights are
    stored inline unless the model's tensors exceed 1.8 GB. With `exporter="dynamo"`, any exception from the
    dynamo exporter triggers one retry with TorchScript; the reason is logged and recorded.

    Args:
        model: Any module whose forward(image) returns a dict of tensors keyed by task name.
        path: Destination `.onnx` file, written atomically.
        task_names: Tasks to export, in output order; each must be a key of the model's output dict.
        example_input: A float32 [B, 3, H, W] batch used for tracing.
        opset: Requested default-domain opset (the exporter may raise it).
        exporter: "dynamo" (torch.export) or "torchscript" (legacy).
        dynamic_hw: Also make H and W symbolic (named "height" and "width").
        max_batch: Upper bound of the dynamic batch axis (enforced by dynamo; recorded for TorchScript).
        metadata: Extra metadata_props, e.g. class_names, sparsity, source_run; non-strings become JSON.

    Returns:
        The ExportInfo read back from the written file.

    Raises:
        PipelineError: For an unknown exporter, bad task names or a model output that lacks a task.
        CheckFailed: If the written graph lacks the requested names or dynamic axes.
        ValueError: If `metadata` sets a key the exporter owns (see exporters.metadata).
    """
    if exporter not in EXPORTERS:
        raise PipelineError(f"Unknown exporter '{exporter}'. Available: {', '.join(EXPORTERS)}")
    task_names = _checked_task_names(task_names)
    check_extra_keys(metadata)
    example = _example_batch(example_input, max_batch)
    external = _state_bytes(model) > LARGE_MODEL_BYTES
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        eager_shapes = _check_model_outputs(model, example, task_names)
        adapter = TaskTupleAdapter(model, task_names).eval()
        with staged_output(path) as staged:
            used, fallback = _export_with_fallback(
                adapter, example, staged, exporter, opset, dynamic_hw, max_batch, external
            )
            proto = onnx.load(str(staged), load_external_data=False)
            if dynamic_hw:
                rename_hw_dims(proto.graph)
            pin_output_dims(proto.graph, eager_shapes, dynamic_axes=(0, 2, 3) if dynamic_hw else (0,))
            check_graph_io(proto, INPUT_NAME, task_names, dynamic_hw)
            props = build_metadata(
                task_names=task_names,
                input_name=INPUT_NAME,
                exporter=used,
                opset=default_opset(proto),
                ir_version=proto.ir_version,
                torch_version=torch.__version__,
                max_batch=max_batch,
                dynamic_hw=dynamic_hw,
                extra=metadata,
            )
            write_metadata(proto, props)
            save_onnx(proto, staged)
    finally:
        model.train(was_training)
    return _export_info(Path(path), proto, used, exporter, fallback, max_batch, external, start, props)


def _checked_task_names(task_names: Sequence[str]) -> tuple[str, ...]:
    names = tuple(task_names)
    if not names:
        raise PipelineError("task_names is empty; name at least one head to export")
    if len(set(names)) != len(names) or INPUT_NAME in names:
        raise PipelineError(f"task_names {list(names)} must be unique and must not be '{INPUT_NAME}'")
    return names


def _example_batch(example_input: torch.Tensor, max_batch: int) -> torch.Tensor:
    x = torch.as_tensor(example_input).detach().to(torch.float32)
    if x.ndim != 4:
        raise PipelineError(f"example_input must be [B, 3, H, W], got shape {list(x.shape)}")
    # torch.export specialises size-1 dims (0/1 specialisation) in some graphs, which would freeze the batch
    # axis; tracing at batch 2 keeps it symbolic. The values are irrelevant to the graph.
    if x.shape[0] == 1:
        x = x.repeat(2, 1, 1, 1)
    if not 2 <= x.shape[0] <= max_batch:
        raise PipelineError(f"max_batch = {max_batch} must be >= 2 and >= the example batch ({x.shape[0]})")
    return x.contiguous()


def _state_bytes(model: nn.Module) -> int:
    """Bytes of parameters and buffers (shared tensors counted once)."""
    seen: dict[int, int] = {}
    for t in list(model.parameters()) + list(model.buffers()):
        seen[id(t)] = t.numel() * t.element_size()
    return sum(seen.values())


def _check_model_outputs(
    model: nn.Module, example: torch.Tensor, task_names: Sequence[str]
) -> dict[str, list[int]]:
    """Run the model once so a missing head fails with a clear message instead of a tracer traceback.

    Returns:
        The eager output shape of each task.
    """
    with torch.no_grad():
        out = model(example)
    if not isinstance(out, Mapping):
        raise PipelineError(
            f"model.forward must return a dict of tensors keyed by task, got {type(out).__name__}"
        )
    missing = [t for t in task_names if t not in out]
    if missing:
        raise PipelineError(f"model outputs {sorted(out)} lack the tasks {missing}")
    return {t: list(out[t].shape) for t in task_names}


def _export_with_fallback(
    adapter: nn.Module,
    example: torch.Tensor,
    staged: Path,
    exporter: str,
    opset: int,
    dynamic_hw: bool,
    max_batch: int,
    external: bool,
) -> tuple[str, str | None]:
    """Run the requested exporter; on a dynamo exception retry with TorchScript. Returns (used, reason)."""
    if exporter == "dynamo":
        try:
            _export_dynamo(adapter, example, staged, opset, dynamic_hw, max_batch, external)
            return "dynamo", None
        except Exception as e:  # any dynamo failure is the documented trigger for the fallback
            reason = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:500]
            log.warning("dynamo ONNX export failed (%s); falling back to the TorchScript exporter", reason)
            clear_staging(staged)
            _export_torchscript(adapter, example, staged, opset, dynamic_hw)
            return "torchscript", reason
    _export_torchscript(adapter, example, staged, opset, dynamic_hw)
    return "torchscript", None


# torch's ONNX registry logs one "torchvision is not installed. Skipping torchvision::<op>" warning per
# torchvision op on every dynamo export; the models here use no torchvision ops, so the lines are pure noise.
_REGISTRY_LOGGER = "torch.onnx._internal.exporter._registration"


class _NoTorchvisionSkipNotes(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("torchvision is not installed. Skipping")


def _export_dynamo(
    adapter: nn.Module,
    example: torch.Tensor,
    staged: Path,
    opset: int,
    dynamic_hw: bool,
    max_batch: int,
    external: bool,
) -> None:
    dims: dict[int, Any] = {0: torch.export.Dim("batch", min=1, max=max_batch)}
    if dynamic_hw:
        # DYNAMIC lets torch.export derive the valid H/W range (strides, dilations) instead of failing on a
        # guessed one; the generated symbol names are replaced by height/width afterwards.
        dims.update({2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC})
    registry_log, quiet = logging.getLogger(_REGISTRY_LOGGER), _NoTorchvisionSkipNotes()
    registry_log.addFilter(quiet)
    with warnings.catch_warnings(), torch.no_grad():
        # torch 2.13's own pytree code trips its LeafSpec deprecation on every export; not actionable here.
        warnings.filterwarnings(
            "ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning
        )
        try:
            torch.onnx.export(
                adapter,
                (example,),
                str(staged),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=list(adapter.task_names),
                opset_version=opset,
                dynamic_shapes={"image": dims},
                external_data=external,
                optimize=True,
                verbose=False,
            )
        finally:
            registry_log.removeFilter(quiet)


def _export_torchscript(
    adapter: nn.Module, example: torch.Tensor, staged: Path, opset: int, dynamic_hw: bool
) -> None:
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_hw else {0: "batch"}
    names = [INPUT_NAME, *adapter.task_names]
    with warnings.catch_warnings(), torch.no_grad():
        # The legacy exporter is chosen on purpose here; its deprecation and tracer warnings are noise.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            adapter,
            (example,),
            str(staged),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=list(adapter.task_names),
            opset_version=opset,
            dynamic_axes={n: dict(axes) for n in names},
            do_constant_folding=True,
        )


def _export_info(
    path: Path,
    proto: onnx.ModelProto,
    used: str,
    requested: str,
    fallback: str | None,
    max_batch: int,
    external: bool,
    start: float,
    props: dict[str, str],
) -> ExportInfo:
    graph = proto.graph
    shapes = {v.name: tensor_shape(v) for v in [*graph.input, *graph.output]}
    data_file = path.with_name(path.name + ".data")
    size = path.stat().st_size + (data_file.stat().st_size if external and data_file.exists() else 0)
    return ExportInfo(
        path=str(path),
        exporter=used,
        requested_exporter=requested,
        fallback_reason=fallback,
        opset=default_opset(proto),
        ir_version=int(proto.ir_version),
        input_name=INPUT_NAME,
        input_shape=shapes[INPUT_NAME],
        output_names=[o.name for o in graph.output],
        output_shapes={o.name: shapes[o.name] for o in graph.output},
        dynamic_axes={n: [i for i, d in enumerate(s) if isinstance(d, str)] for n, s in shapes.items()},
        max_batch=max_batch,
        external_data=external,
        file_bytes=int(size),
        seconds=round(time.perf_counter() - start, 3),
        torch_version=torch.__version__,
        onnx_version=onnx.__version__,
        metadata=dict(props),
    )
