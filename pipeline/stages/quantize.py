"""quantize stage: INT8 (QDQ) model from the exported one, calibrated on TRAIN images, plus the latency table.

`mode: none` records the stage as skipped (validate and build then work on fp32 alone). The work is
`deploy.quantize_stage.quantize_exported`; this adapter resolves paths and the dense reference, and records.
"""

from __future__ import annotations

from torch import nn

from deploy.quantize_stage import quantize_exported, split_arrays
from pipeline.checkpoint import TrainCheckpoint, load_model_state, read_checkpoint
from pipeline.data import build_dataset
from pipeline.errors import MissingArtifactError
from pipeline.models.factory import rebuild_model
from pipeline.stages.base import StageContext, StageRecord


def _dense_reference(ctx: StageContext) -> nn.Module | None:
    """The dense model the train stage wrote for `dense_reference: auto`, or None when the run has none."""
    path = ctx.run.path("train", "reference", "checkpoint.pt")
    if not path.exists():
        return None
    ckpt = read_checkpoint(path, TrainCheckpoint)
    model = rebuild_model(ckpt.model)  # a registered model or the user's factory
    load_model_state(model, ckpt.state_dict, "train/reference/checkpoint.pt")
    return model.eval()


def run(ctx: StageContext) -> StageRecord:
    cfg, q = ctx.cfg, ctx.cfg.quantize
    if q.mode == "none":
        return StageRecord(status="skipped", reason="quantize.mode is none", summary={"mode": "none"})
    onnx_path = ctx.run.path("export", "model.onnx")
    if not onnx_path.exists():
        raise MissingArtifactError(f"no exported model {onnx_path}; run `pipeline export --run-dir {ctx.run.root}` first")
    tasks = cfg.task_kinds  # name -> kind
    train = build_dataset(cfg.data, "train", tasks)
    # One more than asked, so a count larger than the split is reported with the split's size.
    calibration = split_arrays(train, q.calibration_samples + 1, tasks)
    result = quantize_exported(
        onnx_path, ctx.out, q, calibration, tasks, int(train.num_classes),
        hw=(cfg.data.height, cfg.data.width), export_cfg=cfg.export, dense_model=_dense_reference(ctx),
    )
    return StageRecord(outputs=result.outputs, summary={"mode": q.mode, **result.summary})
