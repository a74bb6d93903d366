"""Task-level accuracy gate: an int8 model against its fp32 source, in the units users judge a model by.

Elementwise logit tolerances are the wrong test for int8 (every logit moves by a quantization step while the
predictions barely change). The gate compares what a task delivers:

- seg: argmax agreement between fp32 and int8 (%), and the mIoU drop (percentage points);
- depth: the increase of the absolute error (metres);
- normal: the increase of the mean angular error (degrees).

Metrics come from `deploy.compare.task_parity` (which uses `pipeline.metrics.metrics_from_outputs`), so the
gate and the validate stage score outputs the same way. A failed gate names the head and the number.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from deploy.compare import task_parity
from deploy.runners import OnnxrtRunner, run_batched
from pipeline.config import TaskSpec, as_task_kinds
from pipeline.errors import CheckFailed, ConfigError

__all__ = ["GateCheck", "GateResult", "GateTolerances", "gate_judge", "run_task_gate", "task_gate"]


@dataclass(frozen=True)
class GateTolerances:
    """Per-task limits for int8 vs fp32 (deltas are int8 - fp32 in the direction that hurts)."""

    seg_agreement_min_pct: float = 95.0
    seg_miou_drop_max: float = 1.0  # mIoU percentage points
    depth_abs_err_increase_max_m: float = 0.02
    normal_mean_increase_max_deg: float = 1.0

    @classmethod
    def from_mapping(cls, values: Mapping[str, float] | None) -> GateTolerances:
        """Defaults overridden by `values` (the `quantize.gate` config dict); unknown keys are a ConfigError."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"quantize.gate has unknown keys {unknown}; known: {', '.join(sorted(known))}")
        return cls(**{k: float(v) for k, v in values.items()})


@dataclass(frozen=True)
class GateCheck:
    """One number against its limit. `ratio` is value / limit in the failing direction (> 1 fails)."""

    task: str
    name: str
    value: float
    limit: float
    kind: str  # "min" (value must be >= limit) or "max" (value must be <= limit)

    @property
    def passed(self) -> bool:
        if not np.isfinite(self.value):
            return False
        return self.value >= self.limit if self.kind == "min" else self.value <= self.limit

    @property
    def ratio(self) -> float:
        """How far into the limit: 0 = perfect, 1 = on the limit, > 1 = failing (inf for NaN)."""
        if not np.isfinite(self.value):
            return float("inf")
        if self.kind == "min":  # agreement: the shortfall from 100 % relative to the allowed shortfall
            return (100.0 - self.value) / max(100.0 - self.limit, 1e-12)
        return max(self.value, 0.0) / max(self.limit, 1e-12)

    def describe(self) -> str:
        op = ">=" if self.kind == "min" else "<="
        return f"{self.task} {self.name} = {self.value:.4g} (limit {op} {self.limit:g})"


@dataclass(frozen=True)
class GateResult:
    """All checks plus the per-task metrics of both models. Truthy when every check passed."""

    checks: list[GateCheck]
    parity: dict[str, dict[str, Any]]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def __bool__(self) -> bool:
        return self.passed

    @property
    def failures(self) -> list[GateCheck]:
        return [c for c in self.checks if not c.passed]

    @property
    def worst_ratio(self) -> float:
        """The largest check ratio: one number for ranking quantization choices (lower is better)."""
        return max((c.ratio for c in self.checks), default=0.0)

    def message(self) -> str:
        """One line: 'passed' or the failing heads and numbers."""
        if self.passed:
            return "int8 accuracy gate passed"
        return "int8 accuracy gate failed: " + "; ".join(c.describe() for c in self.failures)

    def raise_if_failed(self, report_path: str | None = None) -> None:
        """CheckFailed (exit 3) naming the head and the number."""
        if not self.passed:
            raise CheckFailed(self.message(), report_path)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "checks": [{**asdict(c), "passed": c.passed} for c in self.checks],
            "failures": [c.describe() for c in self.failures],
            "parity": self.parity,
        }


def task_gate(
    fp32_outputs: Mapping[str, np.ndarray],
    int8_outputs: Mapping[str, np.ndarray],
    targets: Mapping[str, np.ndarray],
    tasks: TaskSpec,
    num_classes: int,
    tolerances: GateTolerances | None = None,
) -> GateResult:
    """Judge int8 outputs against fp32 outputs of the same images, with their ground truth.

    `tasks`: name -> kind, or a list of kinds; each task is gated by its kind's limits.

    Returns:
        A GateResult; `parity` holds both models' metrics, deltas and agreement per task.
    """
    tol = tolerances or GateTolerances()
    kinds = as_task_kinds(tasks)
    parity = task_parity(fp32_outputs, int8_outputs, targets, kinds, num_classes)
    checks: list[GateCheck] = []
    for task, kind in kinds.items():
        p = parity[task]
        if kind == "seg":
            checks.append(
                GateCheck(
                    task,
                    "argmax_agreement_pct",
                    p["agreement"]["argmax_agreement_pct"],
                    tol.seg_agreement_min_pct,
                    "min",
                )
            )
            checks.append(GateCheck(task, "miou_drop", -p["delta"]["miou"], tol.seg_miou_drop_max, "max"))
        elif kind == "depth":
            checks.append(
                GateCheck(
                    task, "abs_err_increase_m", p["delta"]["abs_err"], tol.depth_abs_err_increase_max_m, "max"
                )
            )
        else:
            checks.append(
                GateCheck(
                    task,
                    "mean_angle_increase_deg",
                    p["delta"]["mean"],
                    tol.normal_mean_increase_max_deg,
                    "max",
                )
            )
    return GateResult(checks, parity)


def ort_outputs(path: str | Path, images: np.ndarray, batch_size: int = 8) -> dict[str, np.ndarray]:
    """Outputs of an ONNX file on ONNX Runtime CPU, keyed by task (the graph's output names)."""
    with OnnxrtRunner(path, providers=["CPUExecutionProvider"]) as runner:
        name = runner.session.get_inputs()[0].name
        return run_batched(runner, {name: images}, batch_size)


def run_task_gate(
    fp32_path: str | Path,
    int8_path: str | Path,
    images: np.ndarray,
    targets: Mapping[str, np.ndarray],
    tasks: TaskSpec,
    num_classes: int,
    tolerances: GateTolerances | None = None,
    batch_size: int = 8,
) -> GateResult:
    """Run both ONNX files on `images` (ORT CPU) and gate the int8 one."""
    return gate_judge(fp32_path, images, targets, tasks, num_classes, tolerances, batch_size)(Path(int8_path))


def gate_judge(
    fp32_path: str | Path,
    images: np.ndarray,
    targets: Mapping[str, np.ndarray],
    tasks: TaskSpec,
    num_classes: int,
    tolerances: GateTolerances | None = None,
    batch_size: int = 8,
) -> Callable[[Path], GateResult]:
    """A judge for `exporters.quantize_search`: fp32 outputs computed once, each candidate int8 file gated."""
    fp32 = ort_outputs(fp32_path, images, batch_size)

    def judge(int8_path: Path) -> GateResult:
        return task_gate(
            fp32, ort_outputs(int8_path, images, batch_size), targets, tasks, num_classes, tolerances
        )

    return judge
