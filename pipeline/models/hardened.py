"""Rebuild the plain hardened model (BN folded where the harden stage folded it) from `harden/model.pt`."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from pipeline.checkpoint import HardenedCheckpoint, load_model_state, read_checkpoint
from pipeline.models.factory import rebuild_model
from pipeline.models.folding import fold_batchnorm_

__all__ = ["load_hardened"]


def load_hardened(path: str | Path, source_name: str = "harden/model.pt") -> tuple[nn.Module, HardenedCheckpoint]:
    """The plain hardened model (eval mode, BN folded where it was) and its typed checkpoint."""
    ckpt = read_checkpoint(Path(path), HardenedCheckpoint)
    model = rebuild_model(ckpt.model)
    model.eval()  # folding needs eval-mode BN; the folded values are replaced by the saved weights below
    fold_batchnorm_(model, only=ckpt.bn_folded)
    load_model_state(model, ckpt.state_dict, source_name)
    model.eval()
    return model, ckpt
