"""Rebuild the plain hardened model (BN folded where the harden stage folded it) from `harden/model.pt`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn


def load_hardened_model(path: str | Path, source_name: str = "harden/model.pt") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the plain hardened model (with BN folded where it was) from harden/model.pt."""
    from pipeline.checkpoint import load_checkpoint, load_model_state
    from pipeline.models.registry import create_model

    ckpt = load_checkpoint(path, "hardened")
    model = create_model(ckpt["model"]["name"], **ckpt["model"]["kwargs"])
    modules = dict(model.named_modules())
    for name in ckpt["bn_folded"]:
        parent_name, _, child = name.rpartition(".")
        parent = modules[parent_name] if parent_name else model
        keys = list(parent._modules.keys())
        nxt = keys[keys.index(child) + 1]
        conv = parent._modules[child]
        parent._modules[nxt] = nn.Identity()
        if conv.bias is None:
            conv.bias = nn.Parameter(torch.zeros(conv.out_channels))
    load_model_state(model, ckpt["state_dict"], source_name)
    model.eval()
    return model, ckpt
