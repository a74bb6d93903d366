"""Markdown building blocks for `report.md`: value formatting, tables, collapsible JSON, stage notes, and
the figure drawer that turns a failed plot into a note."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.artifacts import RunDir, read_json
from pipeline.errors import PipelineError
from pipeline.stages.base import STAGE_NAMES

log = logging.getLogger("pipeline.report.markdown")

REPORT_MD = "report.md"
PLOTS_DIR = "report_plots"
TENSORBOARD_DIR = "tensorboard"
STAGE_ORDER = STAGE_NAMES  # defined once, in pipeline.stages.base
# figure key -> PNG file name inside PLOTS_DIR
FIGURES = {
    "sparsity": "sparsity_over_steps.png",
    "thresholds": "thresholds_over_steps.png",
    "task_weights": "task_weights_over_steps.png",
    "layers": "layer_sparsity.png",
    "metrics": "metrics_vs_dense.png",
}
VERDICT = {"ok": "passed", "skipped": "skipped", "failed": "**FAILED**"}


# -- formatting ----------------------------------------------------------------------------------------
def fmt_value(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.{digits}g}"
    if isinstance(v, (dict, list, tuple)):
        return "`" + json.dumps(v, default=str, separators=(",", ":")) + "`"
    return str(v)


def cell(v: Any, digits: int = 4) -> str:
    """A table cell: formatted, pipes escaped, newlines folded."""
    return fmt_value(v, digits).replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


def flag(v: Any) -> str:
    """A pass/fail style value: a failure stands out."""
    return "**no**" if v is False else cell(v)


FLAG_KEYS = ("passed", "sparsity_survived", "metrics_agree", "agree", "ok")


def fmt_pct(v: Any) -> str:
    return "–" if not isinstance(v, (int, float)) or isinstance(v, bool) else f"{v:+.2f}%"


def fmt_bytes(v: Any) -> str:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return fmt_value(v)
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(v) >= scale:
            return f"{v / scale:.2f} {unit} ({int(v)} B)"
    return f"{int(v)} B"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c if isinstance(c, str) else cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


_LIST_HEAD = 4  # items shown of a long list inside a details block
_LIST_MAX = 8


def compact_json(obj: Any, depth: int = 0) -> str:
    """JSON-like text: short containers on one line, long lists cut to their first items (the full data
    stays in the stage's own JSON file)."""
    one_line = json.dumps(obj, default=str, ensure_ascii=False)
    pad, inner = "  " * depth, "  " * (depth + 1)
    if is_scalar(obj) or len(one_line) <= 100 - len(pad):
        return one_line
    if isinstance(obj, Mapping):
        items = [f"{inner}{json.dumps(str(k), ensure_ascii=False)}: {compact_json(v, depth + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, (list, tuple)):
        shown = list(obj) if len(obj) <= _LIST_MAX else list(obj)[:_LIST_HEAD]
        items = [inner + compact_json(v, depth + 1) for v in shown]
        if len(shown) < len(obj):
            items.append(f"{inner}... ({len(obj) - len(shown)} more)")
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return one_line


def json_details(title: str, obj: Any) -> str:
    return f"<details><summary>{title}</summary>\n\n```\n{compact_json(obj)}\n```\n\n</details>"


def is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def mapping_section(
    d: Mapping[str, Any], first: Sequence[str] = (), fmt: Mapping[str, Callable[[Any], str]] | None = None,
    source: str | None = None,
) -> str:
    """Key/value table of the scalar entries (`first` keys first); nested entries with a `status` as one line
    each, other nested entries as collapsible JSON (`source`: the file that holds them in full)."""
    fmt = fmt or {}
    keys = [k for k in first if k in d] + [k for k in d if k not in first]
    rows = [
        [cell(k), fmt[k](d[k]) if k in fmt else (flag(d[k]) if k in FLAG_KEYS else cell(d[k]))]
        for k in keys if is_scalar(d[k])
    ]
    out = [table(["key", "value"], rows)] if rows else []
    nested = [k for k in keys if not is_scalar(d[k])]
    for k in nested:
        v = d[k]
        if isinstance(v, Mapping) and "status" in v and all(x in ("status", "reason") for x in v):
            out.append(f"- `{k}`: {fmt_value(v.get('status'))}" + (f" — {fmt_value(v.get('reason'))}" if v.get("reason") else ""))
    details = [json_details(str(k), d[k]) for k in nested
               if not (isinstance(d[k], Mapping) and "status" in d[k] and all(x in ("status", "reason") for x in d[k]))]
    if details and source:
        details.insert(0, f"Nested entries (long lists cut; in full in `{source}`):")
    out += details
    return "\n\n".join(out)


def heads_table(heads: Mapping[str, Any]) -> str:
    """One row per head; scalar fields as columns (`passed`, `max_abs`, `mean_abs` first), columns that only
    repeat the head name or are empty everywhere dropped."""
    rows_in = {n: h for n, h in heads.items() if isinstance(h, Mapping)}
    preferred = ["passed", "max_abs", "mean_abs"]
    cols = list(dict.fromkeys(preferred + [k for h in rows_in.values() for k, x in h.items() if is_scalar(x)]))

    def useful(c: str) -> bool:
        vals = [h.get(c) for h in rows_in.values()]
        if all(v in (None, "") for v in vals):
            return False
        return not all(v == n for n, v in zip(rows_in, vals, strict=True))  # e.g. "name": the head itself

    cols = [c for c in cols if useful(c)]
    rows = [[f"`{n}`"] + [flag(h.get(c)) if c in FLAG_KEYS else cell(h.get(c), 3) for c in cols]
            for n, h in rows_in.items()]
    out = [table(["head"] + cols, rows)]
    nested = {n: {k: x for k, x in h.items() if not is_scalar(x)} for n, h in rows_in.items()}
    if any(nested.values()):
        out.append(json_details("per-head details", {k: x for k, x in nested.items() if x}))
    return "\n\n".join(out)


def parity_table(parity: Mapping[str, Any]) -> str:
    """Task metrics under both runtimes: `{task: {ref: {m: v}, test: {m: v}, delta?, passed?}}`."""
    rows = []
    for task, p in parity.items():
        if not isinstance(p, Mapping):
            continue
        ref, test, delta = p.get("ref") or {}, p.get("test") or {}, p.get("delta") or {}
        for m in dict.fromkeys(list(ref) + list(test)):
            rows.append([f"`{task}`", cell(m), cell(ref.get(m), 6), cell(test.get(m), 6), cell(delta.get(m), 3),
                         flag(p.get("passed"))])
    return table(["task", "metric", "torch", "onnxruntime", "abs. difference", "passed"], rows) if rows else ""


# -- inputs --------------------------------------------------------------------------------------------
def read_optional(run: RunDir, *parts: str) -> tuple[Any, str | None]:
    """(data, None), (None, None) when the file does not exist, (None, note) when it is unreadable."""
    p = run.path(*parts)
    if not p.exists():
        return None, None
    try:
        return read_json(p), None
    except PipelineError as e:
        log.warning("report: %s", e)
        return None, f"{'/'.join(parts)} is unreadable ({e})"


def stage_note(report: Mapping[str, Any], stage: str) -> str:
    """Why a stage's section is empty: not run / skipped / failed, with the recorded reason."""
    entry = (report.get("stages") or {}).get(stage) or {}
    status = entry.get("status")
    reason = entry.get("reason")
    if status is None:
        return f"_not run (stage `{stage}` has not run yet)_"
    if status == "ok":
        return f"_stage `{stage}` ran but left no data for this section_"
    return f"_{status}" + (f": {fmt_value(reason)}" if reason else "") + "_"


def status_word(report: Mapping[str, Any], stage: str) -> str:
    return ((report.get("stages") or {}).get(stage) or {}).get("status") or "not run"


class Figures:
    """Draws figures into the plots folder; a failure becomes a note instead of an exception."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.made: set[str] = set()

    def draw(self, key: str, caption: str, fn: Callable[[Path], Any]) -> str:
        name = FIGURES[key]
        try:
            fn(self.folder / name)
        except Exception as e:  # a plot must never stop the pipeline
            log.warning("report plot %s unavailable: %s: %s", name, type(e).__name__, e)
            reason = f"{type(e).__name__}: {e}".replace("\n", " ").strip()
            reason = reason if len(reason) <= 300 else reason[:297] + "..."
            return f"_plot unavailable: {reason}_"
        self.made.add(name)
        return f"![{caption}]({PLOTS_DIR}/{name})"

    def remove_stale(self) -> None:
        """Drop figures of an earlier report that this one could not draw (they would be out of date)."""
        for name in FIGURES.values():
            p = self.folder / name
            if name not in self.made and p.exists():
                p.unlink()
