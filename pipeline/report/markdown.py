"""`report.md`: the human-readable run report, with PNG plots in `<run>/report_plots/`.

`write_markdown_report(run, report)` is called by `pipeline.report.write_run_report` after `report.json` is
written (every stage command, `pipeline run all`, `pipeline report --run-dir DIR`). It reads the report dict
plus the per-stage files it summarises (`train/timeseries.json`, `train/sparsity.json`,
`harden/sparsity.json`) and copes with any of them missing: a run that stopped after train still gets a
report whose later sections say "not run".

A figure that fails (matplotlib missing, odd data) is logged and noted as "plot unavailable: <reason>" in
the Markdown; the report is still written. Errors in assembling the Markdown itself are bugs and raise.

`write_tensorboard(run)` writes the same series as TensorBoard scalars when the `tensorboard` package is
installed (it is not a dependency); `write_markdown_report` calls it automatically in that case.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

from pipeline.artifacts import RunDir, atomic_write_text
from pipeline.report.deployable import deployable_section
from pipeline.report.markdown_format import (
    FIGURES,
    PLOTS_DIR,
    REPORT_MD,
    TENSORBOARD_DIR,
    Figures,
    read_optional,
)
from pipeline.report.sections_quantize import quantize_section
from pipeline.report.sections_stages import (
    build_section,
    export_section,
    header_section,
    validation_section,
    verdicts_section,
)
from pipeline.report.sections_training import metrics_section, sparsity_section, training_section
from pipeline.report.tensorboard import write_tensorboard

log = logging.getLogger(__name__)

__all__ = ["FIGURES", "PLOTS_DIR", "REPORT_MD", "TENSORBOARD_DIR", "write_markdown_report", "write_tensorboard"]


def write_markdown_report(run: RunDir, report: dict[str, Any]) -> Path:
    """Write `<run>/report.md` and its figures in `<run>/report_plots/`; return the Markdown path."""
    ts, ts_note = read_optional(run, "train", "timeseries.json")
    train_sp, train_note = read_optional(run, "train", "sparsity.json")
    hard_sp, hard_note = read_optional(run, "harden", "sparsity.json")
    figs = Figures(run.path(PLOTS_DIR))
    sections = [
        header_section(run, report),
        verdicts_section(report),
        deployable_section(report),
        sparsity_section(report, train_sp, hard_sp, ts, [n for n in (train_note, hard_note) if n], figs),
        training_section(report, ts, ts_note, figs),
        metrics_section(report, figs),
        export_section(report),
        quantize_section(report),
        validation_section(report),
        build_section(report),
    ]
    tb = None
    if importlib.util.find_spec("tensorboard") is not None:
        try:
            tb = write_tensorboard(run, report)
        except Exception as e:  # optional extra; never stops the pipeline
            log.warning("TensorBoard scalars not written: %s: %s", type(e).__name__, e)
    if tb is not None:
        sections.append(f"TensorBoard scalars: `tensorboard --logdir {tb}`")
    figs.remove_stale()
    path = run.path(REPORT_MD)
    atomic_write_text(path, "\n\n".join(s for s in sections if s).rstrip() + "\n")
    return path
