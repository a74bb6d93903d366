"""export stage: multi-head ONNX with metadata, simplified, checked, zero pattern verified, compressed.

The work is `exporters.artifact.export_hardened`; this adapter resolves paths and records the outcome.
"""

from __future__ import annotations

from exporters.artifact import export_hardened
from pipeline.stages.base import StageContext, StageRecord


def run(ctx: StageContext) -> StageRecord:
    cfg = ctx.cfg
    result = export_hardened(
        ctx.run.path("harden", "model.pt"),
        ctx.out,
        cfg.export,
        height=cfg.data.height,
        width=cfg.data.width,
        source_run=str(ctx.run.root.name),
        rel_dir="export",
    )
    return StageRecord(outputs=result.outputs, summary=result.summary)
