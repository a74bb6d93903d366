"""train stage: the configured method, plus a dense reference for delta_t / delta_p when asked."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from pipeline.artifacts import atomic_write_json, read_json
from pipeline.config import RunConfig
from pipeline.errors import PipelineError
from pipeline.metrics.summary import delta_p, delta_t
from pipeline.stages import StageContext, StageRecord


def dense_variant(cfg: RunConfig) -> RunConfig:
    """The same run without pruning (same data, model, init, batch order, budget)."""
    return dataclasses.replace(cfg, sparsity=dataclasses.replace(cfg.sparsity, method="dense"))


def reference_metrics(ctx: StageContext) -> tuple[dict[str, Any] | None, str | None]:
    """Dense metrics to compare against: trained here ('auto'), read from a run dir, or none."""
    from trainers.session import train_run

    ref = ctx.cfg.dense_reference
    if ref is None:
        return None, None
    if ctx.cfg.sparsity.method == "dense":
        return None, "self"
    if ref == "auto":
        out = ctx.out / "reference"
        out.mkdir(exist_ok=True)
        if (out / "metrics.json").exists() and not (out / "resume.pt").exists():
            return read_json(out / "metrics.json")["metrics"], "train/reference"
        res = train_run(dense_variant(ctx.cfg), out, progress=ctx.options.get("progress", True))
        return res["metrics"], "train/reference"
    path = Path(ref)
    cand = path / "train" / "metrics.json" if path.is_dir() else path
    if not cand.exists():
        raise PipelineError(
            f"'dense_reference' = {ref}: no train/metrics.json there; give a dense run directory or 'auto'"
        )
    return read_json(cand)["metrics"], str(cand)


def run(ctx: StageContext) -> StageRecord:
    from trainers.session import train_run

    result = train_run(ctx.cfg, ctx.out, progress=ctx.options.get("progress", True))
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
        metrics = read_json(ctx.out / "metrics.json")
        atomic_write_json(ctx.out / "metrics.json", metrics | {"reference": comparison})
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
    return StageRecord(outputs=outputs, summary=summary)
