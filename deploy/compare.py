"""Compare outputs of two runtimes: elementwise per head, and at the level of task metrics.

Elementwise rule (`np.allclose` style, not Polygraphy's): an element passes when

    |test - ref| <= atol + rtol * |ref|

with `ref` the reference runtime (torch before ONNX Runtime, ONNX Runtime before TensorRT), so each link of the
chain blames one conversion. A head passes when shapes agree, no element of either array is NaN or Inf, and
every element passes. Polygraphy's default rule fails only where abs > atol *and* rel > rtol; ours is the
stricter of the two for equal tolerances. Statistics are computed in float64 on elements finite in both.

FP16 logits can fail elementwise while the predictions agree, so `task_parity` compares what users see:
metrics from both runtimes, seg argmax agreement, normal angular difference and depth difference.

Metric rule (`task_parity` with `metric_atol`): a metric passes when |test - ref| <= its allowance, where

- pixel-count metrics (`PIXEL_COUNT_METRICS`: pix_acc, delta1-3, within_*; percent of the N valid pixels
  passing a threshold) are allowed max(metric_atol, k / N * 100): a pixel at a near-tie (a depth ratio at
  1.25, an angle at 11.25 deg) flips at any float difference, and each flip moves the metric by 100 / N points;
- mIoU passes when |delta| <= metric_atol or when at most k valid pixels change their argmax between the
  runtimes (its change per flipped pixel depends on class sizes, so the flips are judged, not the delta);
- every other metric (errors, means, medians) is allowed metric_atol.

k is `flip_pixels` (`validate.metric_flip_pixels`, default 4); k = 0 is the plain |delta| <= metric_atol rule.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from pipeline.config import TaskSpec, as_task_kinds
from pipeline.metrics.evaluate import metrics_from_outputs

MetricsFn = Callable[
    [Mapping[str, np.ndarray], Mapping[str, np.ndarray], list[str], int], dict[str, dict[str, float]]
]


@dataclass(frozen=True)
class OutputComparison:
    """Elementwise comparison of one output. Truthy when it passed."""

    name: str
    passed: bool
    max_abs: float
    mean_abs: float
    p99_abs: float
    max_rel: float  # over elements with ref != 0
    mean_rel: float
    min_required_atol: float  # smallest atol that would pass at this rtol: max(|d| - rtol*|ref|, 0)
    has_nonfinite: bool
    shape_ok: bool
    atol: float
    rtol: float
    num_failed: int
    num_elements: int
    detail: str = ""

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; statistics that could not be computed (NaN) become None."""
        return {k: None if isinstance(v, float) and np.isnan(v) else v for k, v in asdict(self).items()}


def atol_by_head(atol: Mapping[str, float], kinds: Mapping[str, str]) -> dict[str, float]:
    """Tolerances keyed by task name or kind (plus "default") resolved per head: its name's entry, else its
    kind's, else the default; "default" is kept for outputs that are no task."""
    out = {name: float(atol[name] if name in atol else atol.get(kind, atol["default"])) for name, kind in kinds.items()}
    return {**out, "default": float(atol["default"])}


def _atol_for(name: str, atol: Mapping[str, float] | float) -> float:
    if isinstance(atol, Mapping):
        if name in atol:
            return float(atol[name])
        if "default" not in atol:
            raise KeyError(f"no tolerance for output '{name}' and no 'default' in {dict(atol)}")
        return float(atol["default"])
    return float(atol)


def _failed(
    name: str, atol: float, rtol: float, detail: str, *, shape_ok: bool, nonfinite: bool = False, n: int = 0
) -> OutputComparison:
    nan = float("nan")
    return OutputComparison(
        name, False, nan, nan, nan, nan, nan, nan, nonfinite, shape_ok, atol, rtol, n, n, detail
    )


def compare_output(
    name: str, ref: np.ndarray, test: np.ndarray, atol: float, rtol: float
) -> OutputComparison:
    """Compare one output array against its reference (see the module docstring for the rule)."""
    ref, test = np.asarray(ref), np.asarray(test)
    if ref.shape != test.shape:
        return _failed(
            name, atol, rtol, f"shape {list(test.shape)} != reference {list(ref.shape)}", shape_ok=False
        )
    r, t = ref.astype(np.float64), test.astype(np.float64)
    finite = np.isfinite(r) & np.isfinite(t)
    nonfinite = not bool(finite.all())
    if not finite.any():
        return _failed(name, atol, rtol, "no finite elements", shape_ok=True, nonfinite=nonfinite, n=ref.size)
    r, t = r[finite], t[finite]
    diff = np.abs(t - r)
    bound = atol + rtol * np.abs(r)
    failed = int(np.count_nonzero(diff > bound)) + int(ref.size - finite.sum())
    nonzero = r != 0
    rel = diff[nonzero] / np.abs(r[nonzero])
    detail = f"{ref.size - int(finite.sum())} NaN/Inf elements" if nonfinite else ""
    return OutputComparison(
        name=name,
        passed=failed == 0,
        max_abs=float(diff.max()),
        mean_abs=float(diff.mean()),
        p99_abs=float(np.percentile(diff, 99)),
        max_rel=float(rel.max()) if rel.size else 0.0,
        mean_rel=float(rel.mean()) if rel.size else 0.0,
        min_required_atol=float(max((diff - rtol * np.abs(r)).max(), 0.0)),
        has_nonfinite=nonfinite,
        shape_ok=True,
        atol=atol,
        rtol=rtol,
        num_failed=failed,
        num_elements=int(ref.size),
        detail=detail,
    )


def compare_outputs(
    ref: Mapping[str, np.ndarray],
    test: Mapping[str, np.ndarray],
    atol: Mapping[str, float] | float,
    rtol: float,
) -> list[OutputComparison]:
    """Compare every reference output with the same-named test output.

    Args:
        ref: Reference outputs by name.
        test: Outputs under test; a missing name fails, extra names are ignored.
        atol: Per-output absolute tolerances with a "default" entry, or one value for all.
        rtol: Relative tolerance (times |ref|).

    Returns:
        One OutputComparison per reference output, in reference order.
    """
    results = []
    for name, r in ref.items():
        a = _atol_for(name, atol)
        if name not in test:
            results.append(
                _failed(name, a, rtol, f"missing from test outputs {sorted(test)}", shape_ok=False)
            )
        else:
            results.append(compare_output(name, r, test[name], a, rtol))
    return results


def format_comparisons(results: Sequence[OutputComparison]) -> str:
    """One line per output, for logs and reports."""
    lines = []
    for c in results:
        status = "PASSED" if c.passed else "FAILED"
        lines.append(
            f"{status} {c.name}: max_abs={c.max_abs:.3g} p99_abs={c.p99_abs:.3g} max_rel={c.max_rel:.3g} "
            f"min_required_atol={c.min_required_atol:.3g} (atol={c.atol:g}, rtol={c.rtol:g})"
            + (f" [{c.detail}]" if c.detail else "")
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# task-level parity


def runtime_agreement(task: str, ref: np.ndarray, test: np.ndarray) -> dict[str, float]:
    """Agreement between two runtimes' predictions for one task of kind `task`, independent of ground truth."""
    ref, test = np.asarray(ref, np.float64), np.asarray(test, np.float64)
    if task == "seg":
        return {"argmax_agreement_pct": float(100.0 * np.mean(ref.argmax(axis=1) == test.argmax(axis=1)))}
    if task == "normal":
        dot = np.sum(ref * test, axis=1)
        norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(test, axis=1)
        valid = norms > 0
        cos = np.clip(dot[valid] / norms[valid], -1.0, 1.0)
        return {"mean_angle_diff_deg": float(np.degrees(np.arccos(cos)).mean()) if cos.size else 0.0}
    if task == "depth":
        diff = np.abs(ref - test)
        return {"mean_abs_diff": float(diff.mean()), "max_abs_diff": float(diff.max())}
    return {"mean_abs_diff": float(np.abs(ref - test).mean())}


# Metrics that are a percentage of valid pixels passing a threshold (see the module docstring's metric rule).
PIXEL_COUNT_METRICS: dict[str, tuple[str, ...]] = {
    "seg": ("pix_acc",),
    "depth": ("delta1", "delta2", "delta3"),
    "normal": ("within_11_25", "within_22_5", "within_30"),
}


def valid_pixel_count(task: str, target: np.ndarray, num_classes: int) -> int:
    """For a task of kind `task`: pixels the task's metrics count (the metrics' own validity rules: label in range, depth > 0, normal != 0)."""
    t = np.asarray(target)
    if task == "seg":
        return int(np.count_nonzero((t >= 0) & (t < num_classes)))
    if task == "depth":
        return int(np.count_nonzero((t > 0) & np.isfinite(t)))
    if task == "normal":
        return int(np.count_nonzero(np.abs(t).sum(axis=1) > 0))
    return int(t.size)


def argmax_flips(ref: np.ndarray, test: np.ndarray, target: np.ndarray, num_classes: int) -> int:
    """Valid seg pixels whose predicted class differs between the two runtimes."""
    t = np.asarray(target)
    valid = (t >= 0) & (t < num_classes)
    return int(np.count_nonzero((np.asarray(ref).argmax(axis=1) != np.asarray(test).argmax(axis=1)) & valid))


def metric_allowances(
    task: str,
    metrics: Sequence[str],
    metric_atol: Mapping[str, float] | float,
    flip_pixels: int,
    valid_pixels: int,
    flips: int | None = None,
) -> dict[str, float | None]:
    """Allowed |delta| per metric by the module's metric rule; None means "passes: at most k pixels flipped"."""
    out: dict[str, float | None] = {}
    for name in metrics:
        atol = _atol_for(name, metric_atol)
        if name in PIXEL_COUNT_METRICS.get(task, ()) and valid_pixels > 0:
            out[name] = max(atol, 100.0 * flip_pixels / valid_pixels)
        elif name == "miou" and flips is not None and flips <= flip_pixels:
            out[name] = None
        else:
            out[name] = atol
    return out


def task_parity(
    ref_outputs: Mapping[str, np.ndarray],
    test_outputs: Mapping[str, np.ndarray],
    targets: Mapping[str, np.ndarray],
    tasks: TaskSpec,
    num_classes: int,
    *,
    metric_atol: Mapping[str, float] | float | None = None,
    flip_pixels: int = 0,
    metrics_fn: MetricsFn | None = None,
) -> dict[str, dict[str, Any]]:
    """Compute each task's metrics from both runtimes' outputs, their deltas, and runtime agreement.

    Args:
        ref_outputs: Reference outputs over a whole split, keyed by task.
        test_outputs: Outputs under test, same keys and shapes.
        targets: Ground truth in the dataset layout (docs/architecture.md).
        tasks: Tasks to compare: name -> kind, or a list of kinds (the kind picks the agreement and pixel rules).
        num_classes: Segmentation classes.
        metric_atol: If given, a task passes when every |metric delta| is within its allowance (the module's
            metric rule; per metric name, with "default", or one value); otherwise `passed` is None.
        flip_pixels: k of the metric rule: how many near-tie pixels may flip between runtimes (0: none).
        metrics_fn: Override of `pipeline.metrics.evaluate.metrics_from_outputs`.

    Returns:
        `{task: {"ref": {metric: v}, "test": {...}, "delta": {metric: test - ref}, "agreement": {...},
        "passed": bool | None}}`; agreement holds seg `argmax_agreement_pct`, normal
        `mean_angle_diff_deg` or depth `mean_abs_diff`/`max_abs_diff`. With `metric_atol`, also "allowed"
        (per metric, None = passed on flipped pixels), "valid_pixels", "flip_pixels" and, for seg, "argmax_flips".
    """
    metrics_fn = metrics_fn or metrics_from_outputs
    kinds = as_task_kinds(tasks)
    ref_m = metrics_fn(ref_outputs, targets, kinds, num_classes)
    test_m = metrics_fn(test_outputs, targets, kinds, num_classes)
    report: dict[str, dict[str, Any]] = {}
    for task, kind in kinds.items():
        delta = {k: float(test_m[task][k] - v) for k, v in ref_m[task].items() if k in test_m[task]}
        entry: dict[str, Any] = {
            "ref": dict(ref_m[task]),
            "test": dict(test_m[task]),
            "delta": delta,
            "agreement": runtime_agreement(kind, ref_outputs[task], test_outputs[task]),
            "passed": None,
        }
        if metric_atol is not None:
            # without targets (a custom metrics_fn) there is no pixel count: the plain metric_atol rule
            n_valid = valid_pixel_count(kind, targets[task], num_classes) if task in targets else 0
            flips = None
            if kind == "seg" and task in targets:
                flips = argmax_flips(ref_outputs[task], test_outputs[task], targets[task], num_classes)
                entry["argmax_flips"] = flips
            allowed = metric_allowances(kind, list(delta), metric_atol, flip_pixels, n_valid, flips)
            entry["passed"] = all(allowed[k] is None or abs(d) <= allowed[k] for k, d in delta.items())
            entry.update({"allowed": allowed, "valid_pixels": n_valid, "flip_pixels": flip_pixels})
        report[task] = entry
    return report
