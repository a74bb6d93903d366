"""train stage: the configured method, plus a dense reference for delta_t / delta_p when asked."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from pipeline.artifacts import atomic_write_json, read_json
from pipeline.checkpoint import TrainCheckpoint, read_checkpoint
from pipeline.config import RunConfig
from pipeline.data import build_dataset
from pipeline.errors import PipelineError
from pipeline.metrics.baselines import constant_predictor_metrics
from pipeline.metrics.summary import delta_p, delta_t
from pipeline.stages.base import StageContext, StageRecord
from trainers import distributed as dist
from trainers.training_run import checkpoint_fingerprint, train_run, training_fingerprint

log = logging.getLogger(__name__)


def dense_variant(cfg: RunConfig) -> RunConfig:
    """The same run without pruning (same data, model, init, batch order, budget)."""
    return dataclasses.replace(cfg, sparsity=dataclasses.replace(cfg.sparsity, method="dense"))


def finished_result(out: Path, cfg: RunConfig) -> dict[str, Any] | None:
    """The result of a training run that already completed in `out` (staging kept after an interruption).

    Used only when `out` holds a final checkpoint and metrics, no resume.pt, and the checkpoint was trained
    with the same training fingerprint as `cfg`; otherwise None (train, or resume, as usual).
    """
    if (out / "resume.pt").exists() or not (out / "checkpoint.pt").exists() or not (out / "metrics.json").exists():
        return None
    try:
        saved = read_checkpoint(out / "checkpoint.pt", TrainCheckpoint)
        result = read_json(out / "metrics.json")
    except PipelineError:
        return None  # unreadable leftovers: train again
    if checkpoint_fingerprint(saved) != training_fingerprint(cfg):
        return None
    return result


def reference_metrics(ctx: StageContext) -> tuple[dict[str, Any] | None, str | None]:
    """Dense metrics to compare against: trained here ('auto'), read from a run dir, or none."""
    ref = ctx.cfg.dense_reference
    if ref is None:
        return None, None
    if ctx.cfg.sparsity.method == "dense":
        return None, "self"
    if ref == "auto":
        out = ctx.out / "reference"
        out.mkdir(exist_ok=True)
        dense_cfg = dense_variant(ctx.cfg)
        res = finished_result(out, dense_cfg) or train_run(dense_cfg, out, progress=ctx.options.get("progress", True))
        return res["metrics"], "train/reference"
    path = Path(ref)
    cand = path / "train" / "metrics.json" if path.is_dir() else path
    if not cand.exists():
        raise PipelineError(
            f"'dense_reference' = {ref}: no train/metrics.json there; give a dense run directory or 'auto'"
        )
    return read_json(cand)["metrics"], str(cand)


def _constant_baseline(cfg: RunConfig) -> dict[str, Any]:
    """Metrics of a constant predictor on the same split: the floor a trained model must clear."""
    train = build_dataset(cfg.data, "train", cfg.task_kinds)
    val = build_dataset(cfg.data, "val", cfg.task_kinds)
    return constant_predictor_metrics(train, val, cfg.task_kinds)


def run(ctx: StageContext) -> StageRecord:
    # After an interruption during the dense reference, the finished main run is not trained again.
    result = finished_result(ctx.out, ctx.cfg) or train_run(ctx.cfg, ctx.out, progress=ctx.options.get("progress", True))
    dense, source = reference_metrics(ctx)
    if source == "self":
        dense = result["metrics"]
    comparison = None
    if dense is not None:
        comparison = {
            "dense": dense,
            "dense_source": source,
            "delta_t": delta_t(result["metrics"], dense),
            "delta_p": delta_p(result["metrics"], dense),
        }
        if dist.is_main():  # under torchrun only rank 0 writes (and has) metrics.json
            metrics = read_json(ctx.out / "metrics.json")
            atomic_write_json(ctx.out / "metrics.json", metrics | {"reference": comparison})
    if dist.is_main():
        constant = _constant_baseline(ctx.cfg)
        metrics_doc = read_json(ctx.out / "metrics.json")
        atomic_write_json(ctx.out / "metrics.json", metrics_doc | {"constant_predictor": constant})
    sp = result["sparsity"]
    summary = {
        "metrics": result["metrics"],
        "sparsity": {"target": sp["target"], "overall": sp["overall"], "components": sp["components"]},
        "train_seconds": round(result["train_seconds"], 2),
    }
    if comparison:
        summary["delta_t"] = comparison["delta_t"]["overall"]
        summary["delta_p"] = comparison["delta_p"]["overall"]
    outputs = ["checkpoint.pt", "sparsity.json", "metrics.json", "timeseries.json"]
    if (ctx.out / "reference" / "metrics.json").exists():
        outputs.append("reference/metrics.json")
    missed = target_missed(ctx.cfg.sparsity.method, sp["target"], sp["overall"], ctx.cfg.sparsity.structure)
    if missed:
        log.warning(missed)
        summary["warning"] = missed
    return StageRecord(outputs=outputs, summary=summary, reason=missed)


def target_missed(method: str, target: float, overall: float, structure: str = "unstructured",
                  slack: float = 0.02) -> str | None:
    """A loud note when the achieved sparsity is far from the target: methods without a controller (str,
    adapmtl_faithful) reach whatever their dynamics give, and a user must not read such a run as the target's."""
    if method == "dense" or abs(overall - target) <= slack:
        return None
    unit = "of the MACs removed" if structure == "channel" else "of the prunable weights"
    return (f"sparsity target missed: reached {overall:.3f} {unit}, target {target:.3f} "
            f"(method {method} has no controller that enforces the target; longer training or another "
            f"sparsity.init / str_init moves it)")
