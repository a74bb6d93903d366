"""harden stage: plain convs with baked-in sparse weights (unstructured, 2:4 or adaptive-2:4), BN folded.

The work is `trainers.hardening.harden_checkpoint`; this adapter resolves paths and records the outputs.
"""

from __future__ import annotations

from pipeline.artifacts import atomic_write_json
from pipeline.checkpoint import TrainCheckpoint, read_checkpoint, write_checkpoint
from pipeline.stages.base import StageContext, StageRecord
from trainers.hardening import harden_checkpoint


def run(ctx: StageContext) -> StageRecord:
    src = ctx.run.path("train", "checkpoint.pt")
    ckpt = read_checkpoint(src, TrainCheckpoint)
    result = harden_checkpoint(ctx.cfg, ckpt, src, progress=ctx.options.get("progress", True),
                               source_name="train/checkpoint.pt")
    report = result.report
    atomic_write_json(ctx.out / "sparsity.json", report)
    atomic_write_json(ctx.out / "metrics.json", {"metrics": result.metrics, "trained_metrics_source": "train/metrics.json"})
    write_checkpoint(ctx.out / "model.pt", result.checkpoint)
    return StageRecord(
        outputs=["model.pt", "sparsity.json", "metrics.json"],
        summary={"pattern": report["pattern"], "overall": report["overall"], "components": report["components"],
                 "soft_vs_hardened_max_abs": report["soft_vs_hardened_max_abs"], "metrics": result.metrics},
    )
