"""Metric names and directions, and the multitask summaries ΔT (AdapMTL sum form) and Δp (LibMTL mean form).

Both compare a model's metrics M with a dense baseline B of the same architecture and protocol, per metric
as the signed relative change s * (M - B) / B * 100 with s = +1 when higher is better, -1 otherwise:

- ΔT (method.md section 10): per task the **sum** over the task's metrics; overall the mean over tasks.
- Δp (LibMTL `count_improvement`): per task the **mean** over the task's metrics; overall the mean over tasks.

Feed unrounded metrics: the paper table's two-decimal depth errors shift ΔT3 by several points (e.g. rel
err 0.23 vs 0.24 alone is +4.17).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NotRequired, TypedDict

from pipeline.errors import PipelineError

__all__ = [
    "METRIC_DIRECTIONS", "DeltaSummary", "delta_p", "delta_t", "known_directions", "metric_directions", "metric_table", "relative_changes",
]

# Per task KIND. +1: higher is better, -1: lower is better. Insertion order is the reporting order.
METRIC_DIRECTIONS: dict[str, dict[str, int]] = {
    "seg": {"miou": +1, "pix_acc": +1},
    "depth": {"abs_err": -1, "rel_err": -1, "delta1": +1, "delta2": +1, "delta3": +1},
    "normal": {"mean": -1, "median": -1, "within_11_25": +1, "within_22_5": +1, "within_30": +1},
}

Metrics = Mapping[str, Mapping[str, float]]


def metric_directions(task: str, values: Mapping[str, float] | None = None) -> dict[str, int]:
    """The metric directions of a task: by name when it is a kind (a task named after a kind is of that kind),
    else by the kind whose metric names its `values` carry (metric tables are keyed by task name, and the kinds'
    metric names are disjoint).

    Raises:
        ValueError: neither tells the kind.
    """
    if task in METRIC_DIRECTIONS:
        return METRIC_DIRECTIONS[task]
    keys = set(values or ())
    for directions in METRIC_DIRECTIONS.values():
        if keys and set(directions) <= keys:
            return directions
    raise ValueError(f"unknown task '{task}': its metrics {sorted(keys)} are not those of a known kind "
                     f"({', '.join(METRIC_DIRECTIONS)})")


def known_directions(task: str, values: Mapping[str, float] | None = None) -> dict[str, int]:
    """`metric_directions`, or {} when the kind cannot be told (reports draw what they can)."""
    try:
        return metric_directions(task, values)
    except ValueError:
        return {}


class DeltaSummary(TypedDict):
    """Per-task and overall summary change, in percent points (positive = better than dense).

    `undefined` (present only when not empty) maps `task.metric` to why its change is undefined (a zero or
    non-finite baseline); those metrics are left out of the sums, and a task with none left is left out of
    `per_task` (`overall` is None when no task is left).
    """

    per_task: dict[str, float]
    overall: float | None
    undefined: NotRequired[dict[str, str]]


def _changes(metrics: Metrics, dense: Metrics) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """(defined changes per task and metric, `task.metric` -> why undefined)."""
    out: dict[str, dict[str, float]] = {}
    undefined: dict[str, str] = {}
    for task, values in metrics.items():
        directions = metric_directions(task, values)
        if task not in dense:
            raise PipelineError(f"the dense baseline has no metrics for task '{task}'")
        out[task] = {}
        for name, sign in directions.items():
            if name not in values:
                raise ValueError(f"{task}.{name} missing from the model metrics")
            if name not in dense[task]:
                raise PipelineError(f"{task}.{name} missing from the dense baseline metrics")
            base = float(dense[task][name])
            if base == 0 or not math.isfinite(base):
                undefined[f"{task}.{name}"] = f"dense {task}.{name} = {base}; a relative change needs a finite nonzero baseline"
                continue
            out[task][name] = sign * (float(values[name]) - base) / base * 100.0
    if not out:
        raise ValueError("no tasks to summarise")
    return out, undefined


def relative_changes(metrics: Metrics, dense: Metrics) -> dict[str, dict[str, float]]:
    """Signed relative change in percent per task and metric (positive = better than dense).

    Args:
        metrics: task -> metric -> value for the model being judged; any subset of tasks.
        dense: the baseline, with at least the same tasks.

    Raises:
        ValueError: an unknown task or a metric missing from `metrics` (a caller bug).
        PipelineError: the baseline lacks a task or metric, or a baseline value is zero or not finite (the
            dense reference does not fit this run; the user picks another one). `delta_t` / `delta_p` instead
            report such a metric as undefined.
    """
    out, undefined = _changes(metrics, dense)
    if undefined:
        raise PipelineError(next(iter(undefined.values())))
    return out


def _summary(metrics: Metrics, dense: Metrics, per_metric_mean: bool) -> DeltaSummary:
    changes, undefined = _changes(metrics, dense)
    per_task = {t: sum(c.values()) / (len(c) if per_metric_mean else 1) for t, c in changes.items() if c}
    out: DeltaSummary = {"per_task": per_task, "overall": sum(per_task.values()) / len(per_task) if per_task else None}
    if undefined:
        out["undefined"] = undefined
    return out


def delta_t(metrics: Metrics, dense: Metrics) -> DeltaSummary:
    """AdapMTL ΔT: `{"per_task": {task: Σ_metrics change}, "overall": mean over tasks}` (percent points)."""
    return _summary(metrics, dense, per_metric_mean=False)


def delta_p(metrics: Metrics, dense: Metrics) -> DeltaSummary:
    """LibMTL Δp: `{"per_task": {task: mean over metrics}, "overall": mean over tasks}` (percent points)."""
    return _summary(metrics, dense, per_metric_mean=True)


def metric_table(
    rows: Mapping[str, Metrics], dense: Metrics | None = None, tasks: Sequence[str] | None = None
) -> str:
    """Markdown table: one row per model, every metric, plus ΔT per task and overall when `dense` is given.

    Args:
        rows: row label -> task -> metric -> value.
        dense: baseline for ΔT; rows lacking a metric get "–".
        tasks: column order; default the tasks of the first row.
    """
    if not rows:
        return ""
    tasks = list(tasks or next(iter(rows.values())))
    directions = {t: metric_directions(t, next((m[t] for m in rows.values() if t in m), None)) for t in tasks}
    header = ["model"]
    for t in tasks:
        header += [f"{t}.{m}{'↑' if s > 0 else '↓'}" for m, s in directions[t].items()]
        header += [f"ΔT {t}"] if dense is not None else []
    header += ["ΔT"] if dense is not None else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, m in rows.items():
        try:
            dt = delta_t({t: m[t] for t in tasks}, dense) if dense is not None else None
        except (KeyError, ValueError):
            dt = None
        cells = [label]
        for t in tasks:
            cells += [f"{m[t][k]:.4g}" if t in m and k in m[t] else "–" for k in directions[t]]
            if dense is not None:
                cells.append(f"{dt['per_task'][t]:+.2f}" if dt and t in dt["per_task"] else "–")
        if dense is not None:
            cells.append(f"{dt['overall']:+.2f}" if dt and dt["overall"] is not None else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
