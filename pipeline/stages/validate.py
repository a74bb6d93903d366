"""validate stage: ONNX Runtime (CPU) vs the PyTorch hardened model, per head and per task metric.

Inputs and both runtimes' outputs are saved (npz, plus Polygraphy JSON when asked) so the build stage can
compare a TensorRT engine against the same reference in another process. The comparison and the verdict are
`deploy.onnx_validation`'s; this adapter picks the images and records the files.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from deploy.io import save_npz
from deploy.onnx_validation import (
    ImageSet,
    compare_torch_and_onnxrt,
    real_data_report,
    save_comparison_arrays,
    validation_verdict,
)
from deploy.quantize_stage import INT8_NAME, int8_gate_report, split_arrays
from pipeline.artifacts import atomic_write_json, read_json
from pipeline.config import as_task_kinds
from pipeline.data import build_dataset, builtin_kinds, with_task_names
from pipeline.data.batching import gather
from pipeline.data.nyuv2_png import find_realdata, load_nyuv2_png
from pipeline.models.hardened import load_hardened
from pipeline.stages.base import StageContext, StageRecord

log = logging.getLogger(__name__)


def _sample(dataset, n: int, tasks: Iterable[str]) -> ImageSet:
    """The first `n` samples (at most the split), drawn through the one batching path."""
    batch = gather(dataset, torch.arange(min(n, len(dataset))))
    return ImageSet(batch["image"].numpy().astype("float32"), {t: batch[t].numpy() for t in tasks})


def _real_root(setting: str | None) -> Path | None:
    if setting is None:
        return None
    root = find_realdata() if setting == "auto" else Path(setting)
    if root is None:
        log.warning("real NYUv2 sample not found; validated on the embedded dataset only")
    return root


def _int8_gate(ctx: StageContext, tasks: dict[str, str], num_classes: int) -> dict[str, Any] | None:
    """The int8 model (when the quantize stage wrote one) against fp32 on the whole VAL split, in task units."""
    int8 = ctx.run.path("quantize", INT8_NAME)
    if not int8.exists():
        return None
    metrics = ctx.run.path("train", "metrics.json")
    dense = (read_json(metrics).get("reference") or {}).get("dense") if metrics.exists() else None
    images, targets = split_arrays(build_dataset(ctx.cfg.data, "val", tasks), None, tasks)
    report = int8_gate_report(
        ctx.run.path("export", "model.onnx"), int8, images, targets, tasks, num_classes, ctx.cfg.quantize,
        dense, ctx.cfg.validate.batch_size,
    )
    atomic_write_json(ctx.out / "int8_gate.json", report)
    return report


def run(ctx: StageContext) -> StageRecord:
    cfg, vcfg = ctx.cfg, ctx.cfg.validate
    model, ckpt = load_hardened(ctx.run.path("harden", "model.pt"))
    onnx_path = ctx.run.path("export", "model.onnx")
    tasks, num_classes = as_task_kinds(ckpt.tasks), int(ckpt.num_classes)  # name -> kind

    held_out_set = _sample(build_dataset(cfg.data, "val", tasks), vcfg.samples, tasks)
    held_out = compare_torch_and_onnxrt(model, onnx_path, held_out_set, tasks, num_classes, vcfg)
    outputs = save_comparison_arrays(
        ctx.out, held_out_set, held_out, vcfg.batch_size, vcfg.save_polygraphy_json
    )

    real: dict[str, Any] | None = None
    real_root = _real_root(vcfg.real_data)
    if real_root is not None:
        real_set = with_task_names(
            load_nyuv2_png(real_root, builtin_kinds(tasks), cfg.data.height, cfg.data.width), tasks)
        sample = _sample(real_set, vcfg.real_samples, tasks)
        real, r = real_data_report(
            model, onnx_path, sample, real_set.num_classes, str(real_root), tasks, num_classes, vcfg
        )
        save_npz(ctx.out / "real_inputs.npz", {"image": sample.images})
        save_npz(ctx.out / "real_outputs_torch.npz", r["ref"])
        outputs += ["real_inputs.npz", "real_outputs_torch.npz"]

    report, reason = validation_verdict(held_out, real, len(held_out_set.images), vcfg)
    atomic_write_json(ctx.out / "report.json", report)
    summary_int8 = {}
    int8 = _int8_gate(ctx, tasks, num_classes)
    if int8 is not None:
        outputs.append("int8_gate.json")
        summary_int8 = {"int8_gate": int8["passed"]}
        if not int8["passed"]:
            reason = "; ".join(r for r in (reason, int8["message"]) if r)
    return StageRecord(
        status="ok" if reason is None else "failed",
        reason=reason,
        outputs=outputs,
        summary={
            "passed": report["passed"],
            "verdict": report["verdict"],
            "metrics_agree": report["metrics_agree"],
            "real_data": None if real is None else real["passed"],
            **summary_int8,
        },
    )
