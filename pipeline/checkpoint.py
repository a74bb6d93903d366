"""Self-describing checkpoints that load with `torch.load(weights_only=True)`.

A checkpoint holds tensors, plain containers and primitives only:
`{"format", "kind", "version", "model": {"name", "kwargs"}, "state_dict", "method": {"name", "state"}, "config", ...}`.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.artifacts import atomic_torch_save
from pipeline.errors import PipelineError

CHECKPOINT_FORMAT = "mtl-compress.checkpoint/1"


def save_checkpoint(path: Path, kind: str, payload: dict[str, Any]) -> None:
    """Write atomically (temp file + rename): a kill mid-write leaves the previous checkpoint intact."""
    from pipeline import __version__

    atomic_torch_save({"format": CHECKPOINT_FORMAT, "kind": kind, "version": __version__, **payload}, path)


def load_checkpoint(path: Path, kind: str | None = None) -> dict[str, Any]:
    """Load and check a checkpoint; corrupted, truncated or foreign files give a one-line PipelineError."""
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" not in str(e).lower():
            raise PipelineError(
                f"checkpoint {path} cannot be read (truncated or corrupted: {type(e).__name__}); "
                "re-run the stage that wrote it"
            ) from None
        raise PipelineError(
            f"checkpoint {path} holds Python objects besides tensors and plain values, which torch.load(weights_only=True) "
            "refuses to load; it was not written by this pipeline (or was tampered with): use a checkpoint it wrote"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise PipelineError(
            f"checkpoint {path} cannot be read (truncated or corrupted: {first}); re-run the stage that wrote it"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise PipelineError(f"{path} is not an mtl-compress checkpoint (format {CHECKPOINT_FORMAT} expected)")
    if kind is not None and ckpt.get("kind") != kind:
        raise PipelineError(f"{path} is a '{ckpt.get('kind')}' checkpoint, expected '{kind}'")
    return ckpt


def load_model_state(model: nn.Module, state: dict[str, Any], source: Path | str) -> None:
    """`load_state_dict(strict=True)` with a one-line error naming what differs."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        if wrong:
            parts.append(f"{len(wrong)} shape mismatches (e.g. {wrong[0]})")
        raise PipelineError(
            f"checkpoint {source} does not fit this model: {', '.join(parts)}; it was written for a different "
            "model or task set; use the config it was trained with"
        )
    model.load_state_dict(state)
