"""What every stage adapter shares: the stage names, the context a stage runs in and the record it returns.

Adapters (`pipeline/stages/{train,harden,export,quantize,validate,build}.py`) import from here, never from the
`pipeline.stages` package, so the stage table in `pipeline/stages/__init__.py` can import the adapters at
module top without an import cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.artifacts import RunDir
from pipeline.config import RunConfig

# The pipeline order; the one definition (CLI choices, the stage table and the reports use it).
STAGE_NAMES = ("train", "harden", "export", "quantize", "validate", "build")


@dataclass
class StageContext:
    run: RunDir
    cfg: RunConfig
    out: Path
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class StageRecord:
    status: str = "ok"  # ok | skipped | failed
    reason: str | None = None
    outputs: list[str] = field(default_factory=list)  # file names inside the stage folder
    summary: dict[str, Any] = field(default_factory=dict)
    inputs: list[Path] = field(default_factory=list)  # extra input files read (outside upstream outputs)


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[StageContext], StageRecord]
    needs: tuple[str, ...]  # upstream files, relative to the run dir
    config_sections: tuple[str, ...]
    keep_partial: bool = False  # train keeps resume.pt in its staging folder across interruptions
    description: str = ""
    # Upstream files used when their stage produced them (quantize's int8 model is absent when mode is none):
    # checked like `needs` (sha256 against the manifest) and recorded as inputs only when listed as an output.
    optional_needs: tuple[str, ...] = ()
