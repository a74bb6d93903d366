"""TensorBoard scalars for a run (written only when the optional `tensorboard` package is installed)."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.artifacts import RunDir
from pipeline.report.markdown_format import TENSORBOARD_DIR, read_optional


def write_tensorboard(run: RunDir, report: Mapping[str, Any] | None = None) -> Path | None:
    """Write the timeseries (sparsity, thresholds, task weights, losses, lr) and final metrics as TensorBoard
    scalars into `<run>/tensorboard/` (replaced on every call). Returns None when `tensorboard` is not
    installed or there is no timeseries."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    ts, _ = read_optional(run, "train", "timeseries.json")
    points = (ts or {}).get("points") or []
    if not points:
        return None
    out = run.path(TENSORBOARD_DIR)
    if out.exists():
        shutil.rmtree(out)
    writer = SummaryWriter(log_dir=str(out))
    try:
        last = 0
        for i, p in enumerate(points):
            step = int(p.get("step", i))
            last = max(last, step)
            sp = p.get("sparsity") or {}
            scalars = {"sparsity/overall": sp.get("overall"), "sparsity/target": sp.get("target"), "lr": p.get("lr")}
            scalars |= {f"sparsity/{c}": v for c, v in (sp.get("components") or {}).items()}
            scalars |= {f"threshold/{c}": v for c, v in (p.get("thresholds") or {}).items()}
            scalars |= {f"task_weight/{t}": v for t, v in (p.get("task_weights") or {}).items()}
            scalars |= {f"loss/{t}": v for t, v in (p.get("losses") or {}).items()}
            for tag, v in scalars.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    writer.add_scalar(tag, float(v), step)
        m = (report or {}).get("metrics") or {}
        for label in ("pruned", "dense"):
            for task, values in (m.get(label) or {}).items():
                for k, v in (values or {}).items():
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        writer.add_scalar(f"metrics_{label}/{task}.{k}", float(v), last)
        for key in ("delta_t", "delta_p"):
            v = (report or {}).get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                writer.add_scalar(f"summary/{key}", float(v), last)
    finally:
        writer.close()
    return out
