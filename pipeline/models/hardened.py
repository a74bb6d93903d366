"""Rebuild the plain hardened model (BN folded where the harden stage folded it, channels compacted where it
compacted them) from `harden/model.pt`, without any training code."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from pipeline.checkpoint import HardenedCheckpoint, load_model_state, read_checkpoint
from pipeline.errors import PipelineError
from pipeline.models.channels import compact_
from pipeline.models.factory import example_image, rebuild_model
from pipeline.models.folding import fold_batchnorm_

__all__ = ["load_hardened"]


def load_hardened(path: str | Path, source_name: str = "harden/model.pt") -> tuple[nn.Module, HardenedCheckpoint]:
    """The plain hardened model (eval mode, BN folded and channels compacted where they were) and its checkpoint."""
    ckpt = read_checkpoint(Path(path), HardenedCheckpoint)
    model = rebuild_model(ckpt.model)
    model.eval()  # folding needs eval-mode BN; the folded values are replaced by the saved weights below
    fold_batchnorm_(model, only=ckpt.bn_folded)
    if ckpt.channel_plan:
        # The plan's group names and indices refer to the folded, uncompacted model: the same structure as here.
        data = ckpt.data or {}
        if not {"height", "width"} <= set(data):
            raise PipelineError(f"{source_name}: a channel plan needs the input size in its 'data' (height, width)")
        compact_(model, example_image(model, 1, int(data["height"]), int(data["width"])), ckpt.channel_plan)
    load_model_state(model, ckpt.state_dict, source_name)
    model.eval()
    return model, ckpt
