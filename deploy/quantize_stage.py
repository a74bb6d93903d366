"""The quantize stage's work and validate's int8 gate, as library calls (issue #16).

`quantize_exported` turns the exported fp32 ONNX into a QDQ int8 model calibrated on TRAIN-split images,
leaving in fp32 the layers the per-layer sensitivity search picks (judged by the task gate on the same
TRAIN images, never on validation ones), then times the dense fp32, pruned fp32 and pruned int8 models side
by side on ONNX Runtime CPU. `int8_gate_report` is validate's check of the int8 model against the fp32 one
on the VAL split, in task units, with int8's metrics and ΔT against the dense reference.

Layering: `deploy` may use `exporters` (quantizer, search, ONNX export) and the `pipeline` foundation.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deploy.latency_table import latency_table
from deploy.task_gate import GateTolerances, gate_judge, ort_outputs, task_gate
from exporters.onnx_export import export_onnx
from exporters.quantize import calibration_images, quantize_int8, validate_settings
from exporters.quantize_search import search_fp32_layers
from exporters.simplify import simplify_onnx
from pipeline.artifacts import atomic_write_json
from pipeline.config import ExportConfig, QuantizeConfig, TaskSpec
from pipeline.data.batching import gather
from pipeline.errors import MissingArtifactError
from pipeline.metrics.summary import delta_t

log = logging.getLogger(__name__)

__all__ = [
    "DENSE_NAME",
    "INT8_NAME",
    "LATENCY_NAME",
    "QUANTIZE_NAME",
    "QuantizeResult",
    "int8_gate_report",
    "quantize_exported",
    "split_arrays",
]

INT8_NAME = "model_int8.onnx"
DENSE_NAME = "dense_fp32.onnx"
QUANTIZE_NAME = "quantize.json"
LATENCY_NAME = "latency.json"


@dataclass
class QuantizeResult:
    """Files written into the stage folder (names), the stage summary, and the two report dicts."""

    outputs: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    quantize: dict[str, Any] = field(default_factory=dict)
    latency: dict[str, Any] = field(default_factory=dict)


def split_arrays(dataset: Any, count: int | None, tasks: TaskSpec) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The first `count` samples of a split (all when None) as numpy images and targets."""
    n = len(dataset) if count is None else min(count, len(dataset))
    batch = gather(dataset, torch.arange(n))
    return batch["image"].numpy().astype(np.float32), {t: batch[t].numpy() for t in tasks}


def _quantize(
    fp32: Path, out: Path, images: np.ndarray, targets: Mapping[str, np.ndarray], tasks: TaskSpec,
    num_classes: int, q: QuantizeConfig,
) -> dict[str, Any]:
    """Quantize (with the fp32-layer search when asked) and gate on the calibration images."""
    tol = GateTolerances.from_mapping(q.gate)
    judge = gate_judge(fp32, images, targets, tasks, num_classes, tol, q.calibration_batch_size)
    kwargs = {
        "method": q.calibration_method,
        "activation_type": q.activation_type,
        "per_channel": q.per_channel,
        "reduce_range": q.reduce_range,
        "percentile": q.percentile,
        "batch_size": q.calibration_batch_size,
    }
    if q.auto_exclude:
        found = search_fp32_layers(
            fp32, out, images, judge, exclude=q.exclude, max_exclude=q.max_auto_exclude, **kwargs
        )
        info, verdict, search = found.info, found.judgement, found.to_dict()
    else:
        info = quantize_int8(fp32, out, images, exclude=q.exclude, **kwargs)
        verdict, search = judge(out), None
    if not verdict.passed:
        log.warning("int8 model fails the gate on the calibration images: %s", verdict.message())
    return {
        **info.to_dict(),
        "path": INT8_NAME,
        "calibration_split": "train",
        "calibration_gate": verdict.to_dict(),
        "search": search,
    }


def _export_dense(model: nn.Module, tasks: TaskSpec, out: Path, ecfg: ExportConfig, hw: tuple[int, int]) -> Path:
    """Export the dense reference model for timing only (same exporter and simplifier as the pruned one)."""
    raw = out.with_suffix(".raw.onnx")
    example = torch.rand(2, 3, *hw)
    export_onnx(
        model, raw, task_names=list(tasks), example_input=example, opset=ecfg.opset, exporter=ecfg.exporter,
        dynamic_hw=ecfg.dynamic_hw, max_batch=ecfg.max_batch, metadata={"purpose": "latency reference"},
    )
    simplify_onnx(raw, out, tool=ecfg.simplifier)
    raw.unlink(missing_ok=True)
    return out


def quantize_exported(
    fp32_path: str | Path,
    out_dir: str | Path,
    q: QuantizeConfig,
    calibration: tuple[np.ndarray, Mapping[str, np.ndarray]],
    tasks: TaskSpec,
    num_classes: int,
    *,
    hw: tuple[int, int],
    export_cfg: ExportConfig,
    dense_model: nn.Module | None = None,
) -> QuantizeResult:
    """Quantize the exported model, write `quantize.json`, time the models and write `latency.json`.

    Args:
        fp32_path: The export stage's `model.onnx`.
        out_dir: The stage folder.
        q: The `quantize:` section.
        calibration: TRAIN-split images and targets, at least `q.calibration_samples` of them when the split
            has that many (`split_arrays(train, q.calibration_samples + 1, ...)` lets the count check see more).
        dense_model: The dense reference (train/reference), exported for the latency table only; None times
            the pruned models alone and the table says so.

    Raises:
        MissingArtifactError: No exported model.
        ConfigError: A bad calibration count, method or activation type.
    """
    fp32, out = Path(fp32_path), Path(out_dir)
    if not fp32.is_file():
        raise MissingArtifactError(f"exported model {fp32} does not exist; run `pipeline export` first")
    validate_settings(q.calibration_method, q.activation_type)
    images = calibration_images(calibration[0], q.calibration_samples)
    targets = {t: v[: len(images)] for t, v in calibration[1].items()}
    report = _quantize(fp32, out / INT8_NAME, images, targets, tasks, num_classes, q)
    outputs = [INT8_NAME, QUANTIZE_NAME, LATENCY_NAME]
    models = {"pruned_fp32": fp32, "pruned_int8": out / INT8_NAME}
    note = "dense reference not in this run (dense_reference is not auto): pruned models only"
    if dense_model is not None:
        models = {"dense_fp32": _export_dense(dense_model, tasks, out / DENSE_NAME, export_cfg, hw), **models}
        outputs.append(DENSE_NAME)
        note = "dense_fp32: train/reference exported for timing only"
    table = latency_table(
        models, (3, *hw), batches=q.latency_batches, threads=q.latency_threads or None,
        warmup=q.latency_warmup, rounds=q.latency_rounds, iters_per_round=q.latency_iters,
    )
    table["note"] = note
    atomic_write_json(out / QUANTIZE_NAME, report)
    atomic_write_json(out / LATENCY_NAME, table)
    summary = {
        "calibration_gate": report["calibration_gate"]["passed"],
        "fp32_convs": report["fp32_convs"],
        "excluded": report["excluded"],
    }
    return QuantizeResult(outputs, summary, report, table)


def int8_gate_report(
    fp32_path: str | Path,
    int8_path: str | Path,
    images: np.ndarray,
    targets: Mapping[str, np.ndarray],
    tasks: TaskSpec,
    num_classes: int,
    q: QuantizeConfig,
    dense_metrics: Mapping[str, Mapping[str, float]] | None,
    batch_size: int = 8,
) -> dict[str, Any]:
    """validate's int8 check: the task gate (int8 vs fp32) on VAL images, int8's metrics and ΔT vs dense."""
    tol = GateTolerances.from_mapping(q.gate)
    fp32_out = ort_outputs(fp32_path, images, batch_size)
    int8_out = ort_outputs(int8_path, images, batch_size)
    gate = task_gate(fp32_out, int8_out, targets, tasks, num_classes, tol)
    fp32_m = {t: gate.parity[t]["ref"] for t in tasks}
    int8_m = {t: gate.parity[t]["test"] for t in tasks}
    dt = None
    if dense_metrics:
        dt = {
            "int8": delta_t(int8_m, dense_metrics)["overall"],
            "fp32": delta_t(fp32_m, dense_metrics)["overall"],
        }
    return {
        "passed": gate.passed,
        "message": gate.message(),
        "split": "val",
        "images": int(len(images)),
        "gate": gate.to_dict(),
        "metrics": {"fp32": fp32_m, "int8": int8_m},
        "delta_t_vs_dense": dt,
        "note": None if dense_metrics else "no dense reference in this run: no delta_t",
    }
