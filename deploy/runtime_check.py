"""One verdict for "does runtime B reproduce runtime A": run -> compare heads -> task-metric parity -> verdict.

Used by the validate stage (ONNX Runtime CPU against PyTorch) and by the engine checks (TensorRT or ONNX Runtime
GPU against the saved reference), so both judge outputs by the same rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from deploy.compare import atol_by_head, compare_outputs, runtime_agreement, task_parity
from deploy.runners.base import InferenceRunner, run_batched
from pipeline.config import TaskSpec, as_task_kinds
from pipeline.errors import PipelineError


@dataclass(frozen=True)
class Tolerances:
    """Elementwise rule |test - ref| <= atol + rtol * |ref| per head, and the allowed |delta| per task metric.

    `atol` maps head name or task kind to tolerance (with a "default" key); `metric_atol` is one value for every metric or a
    mapping metric name -> tolerance (with "default"). `flip_pixels` is k of `deploy.compare`'s metric rule:
    pixel-count metrics may differ by max(metric_atol, k / N * 100) points, mIoU passes when at most k pixels
    change their argmax; 0 keeps the plain |delta| <= metric_atol rule.
    """

    atol: Mapping[str, float]
    rtol: float
    metric_atol: Mapping[str, float] | float
    flip_pixels: int = 0


def judge_outputs(
    reference: Mapping[str, np.ndarray],
    outputs: Mapping[str, np.ndarray],
    targets: Mapping[str, np.ndarray] | None,
    metric_tasks: TaskSpec,
    num_classes: int,
    tolerances: Tolerances,
    kinds: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Compare `outputs` with `reference` per head and, with targets, per task metric; decide the verdict.

    `metric_tasks`: the tasks scored by metric (name -> kind, or a list of kinds); `kinds`: name -> kind of every
    head (default: those of `metric_tasks`; other heads are judged as generic outputs).

    Returns:
        {"heads": {head: OutputComparison dict}, "heads_passed", "agreement": {task: ground-truth-free agreement},
        "parity": `task_parity` result ({} without targets or metric tasks), "metrics_agree" (None when no metric
        was compared), "passed" (heads passed and metrics did not disagree)}.
    """
    missing = sorted(set(reference) - set(outputs))
    if missing:
        raise PipelineError(f"runtime outputs {sorted(outputs)} lack reference head(s) {missing}")
    metric_kinds = as_task_kinds(metric_tasks) if metric_tasks else {}
    kind_of = {**metric_kinds, **(kinds or {})}
    head_kinds = {h: kind_of.get(h, h) for h in reference}
    heads = compare_outputs(reference, outputs, atol_by_head(tolerances.atol, head_kinds), tolerances.rtol)
    parity: dict[str, Any] = {}
    if targets is not None and metric_kinds:
        parity = task_parity(
            reference,
            outputs,
            targets,
            metric_kinds,
            num_classes,
            metric_atol=tolerances.metric_atol,
            flip_pixels=tolerances.flip_pixels,
        )
    heads_passed = all(bool(h) for h in heads)
    metrics_agree = all(p["passed"] for p in parity.values()) if parity else None
    return {
        "heads": {h.name: h.to_dict() for h in heads},
        "heads_passed": heads_passed,
        "agreement": {task: runtime_agreement(head_kinds[task], ref, outputs[task]) for task, ref in reference.items()},
        "parity": parity,
        "metrics_agree": metrics_agree,
        "passed": heads_passed and metrics_agree is not False,
    }


def check_runtime_against_reference(
    runner: InferenceRunner,
    inputs: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    targets: Mapping[str, np.ndarray] | None,
    metric_tasks: TaskSpec,
    num_classes: int,
    tolerances: Tolerances,
    batch_size: int,
    kinds: Mapping[str, str] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Run an active `runner` over `inputs` in chunks of `batch_size` and judge it against `reference`.

    Returns:
        The runner's outputs (concatenated over chunks) and `judge_outputs`'s verdict.
    """
    if not inputs:
        raise PipelineError("no inputs to check against; run `pipeline run validate` to save them")
    outputs = run_batched(runner, inputs, batch_size)
    return outputs, judge_outputs(reference, outputs, targets, metric_tasks, num_classes, tolerances, kinds)
