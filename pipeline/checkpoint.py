"""Self-describing checkpoints that load with `torch.load(weights_only=True)`.

A checkpoint holds tensors, plain containers and primitives only:
`{"format", "kind", "version", "model": {"name", "kwargs"}, "state_dict", "method": {"name", "state"}, "config", ...}`.
The typed forms (`TrainCheckpoint`, `HardenedCheckpoint`, `ResumePoint`) name those fields once:
`write_checkpoint(path, ckpt)` saves one, `read_checkpoint(path, TrainCheckpoint)` loads and checks one.
"""

from __future__ import annotations

import dataclasses
import pickle
import zipfile
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from pipeline import __version__
from pipeline.artifacts import atomic_torch_save
from pipeline.errors import PipelineError

CHECKPOINT_FORMAT = "mtl-compress.checkpoint/1"


def save_checkpoint(path: Path, kind: str, payload: dict[str, Any]) -> None:
    """Write atomically (temp file + rename): a kill mid-write leaves the previous checkpoint intact."""
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
            parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            parts.append(f"{len(wrong)} shape mismatches (e.g. {wrong[0]})")
        raise PipelineError(
            f"checkpoint {source} does not fit this model: {', '.join(parts)}; it was written for a different "
            "model or task set; use the config it was trained with"
        )
    model.load_state_dict(state)


# -- typed checkpoints ----------------------------------------------------------------------------------------
# Field order is the order written to disk (kept from the dict form, so files stay byte-identical).


@dataclasses.dataclass
class TrainCheckpoint:
    """`train/checkpoint.pt`: the trained soft/masked model, its method state and what it was trained on."""

    KIND: ClassVar[str] = "train"
    model: dict[str, Any]  # {"name", "kwargs"}: create_model(**model) rebuilds the architecture
    state_dict: dict[str, Any]
    method: dict[str, Any]  # {"name", "state"}
    tasks: list[str] | dict[str, str]  # task names; the mapping name -> kind when a name is not its kind
    num_classes: int
    class_names: list[str]
    data: dict[str, Any]  # {"name", "fingerprint", "height", "width"}
    config: dict[str, Any]  # the resolved RunConfig as a dict
    sparsity: dict[str, Any]
    versions: dict[str, str]
    version: str | None = None  # package version that wrote it (filled in on read)


@dataclasses.dataclass
class HardenedCheckpoint:
    """`harden/model.pt`: the plain hardened model (BN folded into the convs listed in `bn_folded`)."""

    KIND: ClassVar[str] = "hardened"
    model: dict[str, Any]
    state_dict: dict[str, Any]
    bn_folded: list[str]
    tasks: list[str] | dict[str, str]  # task names; the mapping name -> kind when a name is not its kind
    num_classes: int
    class_names: list[str]
    data: dict[str, Any]
    pattern: str
    two_four_layers: list[str]
    sparsity: dict[str, Any]
    source: dict[str, Any]  # {"checkpoint", "method"}
    # Channel pruning: kept channel indices per channel group (root conv name) of the BN-folded model; `load_hardened`
    # compacts the rebuilt model with it before loading the smaller state_dict. None: unstructured (not written).
    channel_plan: dict[str, list[int]] | None = None
    version: str | None = None


@dataclasses.dataclass
class ResumePoint:
    """`train/resume.pt`: the full trainer state, used only when its training fingerprint matches."""

    KIND: ClassVar[str] = "resume"
    fingerprint: str | None
    trainer: dict[str, Any]
    version: str | None = None


CheckpointT = TypeVar("CheckpointT", TrainCheckpoint, HardenedCheckpoint, ResumePoint)


def write_checkpoint(path: Path, ckpt: TrainCheckpoint | HardenedCheckpoint | ResumePoint) -> None:
    """Save a typed checkpoint atomically (the current package version is recorded, not `ckpt.version`)."""
    # Optional fields at their default are left out, so files written without them stay byte-identical.
    payload = {f.name: getattr(ckpt, f.name) for f in dataclasses.fields(ckpt) if f.name != "version"
               and not (f.default is None and getattr(ckpt, f.name) is None)}
    save_checkpoint(path, ckpt.KIND, payload)


def read_checkpoint(path: Path, cls: type[CheckpointT]) -> CheckpointT:
    """Load a checkpoint of `cls.KIND`; a missing field gives a one-line PipelineError."""
    raw = load_checkpoint(path, cls.KIND)
    names = [f.name for f in dataclasses.fields(cls)]
    required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
    missing = [n for n in required if n not in raw]
    if missing:
        raise PipelineError(
            f"checkpoint {path} lacks '{missing[0]}' ({len(missing)} fields missing); it was written by an older "
            "or different tool: re-run the stage that wrote it"
        )
    return cls(**{n: raw.get(n) for n in names})
