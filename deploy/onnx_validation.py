"""ONNX Runtime (CPU) against the PyTorch hardened model: per head, per task metric, and the verdict.

The validate stage loads the images and hands them here; the judging is `deploy.runtime_check`, the same rule the
engine checks use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from deploy.io import save_npz, save_polygraphy_inputs, save_polygraphy_outputs
from deploy.runners import OnnxrtRunner, TorchRunner, run_batched
from deploy.runtime_check import Tolerances, check_runtime_against_reference
from pipeline.config import TaskSpec, ValidateConfig, as_task_kinds

TOLERANCE_RULE = (
    "|onnx - torch| <= atol + rtol * |torch| elementwise; metrics |delta| <= metric_atol, except pixel-count "
    "metrics (pix_acc, delta1-3, within_*): |delta| <= max(metric_atol, metric_flip_pixels / N * 100) with N valid "
    "pixels, and miou also passes when at most metric_flip_pixels pixels change their argmax"
)


@dataclass(frozen=True)
class ImageSet:
    """Images `[N, 3, H, W]` float32 and their targets per task, as the validate stage sampled them."""

    images: np.ndarray
    targets: Mapping[str, np.ndarray]


def tolerances_from_config(vcfg: ValidateConfig) -> Tolerances:
    return Tolerances(vcfg.atol, vcfg.rtol, vcfg.metric_atol, vcfg.metric_flip_pixels)


def compare_torch_and_onnxrt(
    model: nn.Module,
    onnx_path: Any,
    data: ImageSet,
    tasks: TaskSpec,
    num_classes: int,
    vcfg: ValidateConfig,
    metric_tasks: TaskSpec | None = None,
) -> dict[str, Any]:
    """Both runtimes on the same images: {"ref", "test" (outputs), and `judge_outputs`'s verdict keys}.

    `tasks`: name -> kind (or a list of kinds) of every head; `metric_tasks`: those scored by metric (default all).
    """
    feed = {"image": data.images}
    kinds = as_task_kinds(tasks)
    with TorchRunner(model, output_names=list(kinds)) as ref_runner:
        ref = run_batched(ref_runner, feed, vcfg.batch_size)
    with OnnxrtRunner(onnx_path, providers=["CPUExecutionProvider"]) as ort_runner:
        test, verdict = check_runtime_against_reference(
            ort_runner,
            feed,
            ref,
            data.targets,
            kinds if metric_tasks is None else metric_tasks,
            num_classes,
            tolerances_from_config(vcfg),
            vcfg.batch_size,
            kinds,
        )
    return {"ref": ref, "test": test, **verdict}


def real_data_report(
    model: nn.Module,
    onnx_path: Any,
    data: ImageSet,
    real_num_classes: int,
    source: str,
    tasks: TaskSpec,
    num_classes: int,
    vcfg: ValidateConfig,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The comparison on a real sample; seg metrics only when its class set is the model's.

    Returns:
        (the report's "real_data" entry, the comparison with "ref"/"test" outputs for saving).
    """
    # The model's classes are the training set's; NYUv2's 13 classes only line up when it was trained on them.
    kinds = as_task_kinds(tasks)
    r_tasks = {t: k for t, k in kinds.items() if k != "seg" or real_num_classes == num_classes}
    seg_tasks = [t for t, k in kinds.items() if k == "seg"]
    r = compare_torch_and_onnxrt(model, onnx_path, data, kinds, num_classes, vcfg, metric_tasks=r_tasks)
    real = {
        "source": source,
        "samples": len(data.images),
        "passed": r["heads_passed"] and r["metrics_agree"] is not False,
        "heads": r["heads"],
        "metrics_agree": r["metrics_agree"],
        "parity": r["parity"],
        "seg_compared_as": "argmax agreement only (class sets differ)" if seg_tasks and not any(
            t in r_tasks for t in seg_tasks) else "metrics",
    }
    for t in (t for t in seg_tasks if t not in r_tasks):
        # one key per seg task; the plain name keeps the key every run before task names wrote
        key = "seg_argmax_agreement_pct" if t == "seg" else f"{t}_argmax_agreement_pct"
        real[key] = float((r["ref"][t].argmax(1) == r["test"][t].argmax(1)).mean() * 100)
    return real, r


def validation_verdict(
    held_out: Mapping[str, Any], real: Mapping[str, Any] | None, samples: int, vcfg: ValidateConfig
) -> tuple[dict[str, Any], str | None]:
    """The validate report and, when it failed, the one-line reason."""
    passed = (
        held_out["heads_passed"]
        and held_out["metrics_agree"] is not False
        and (real is None or real["passed"])
    )
    report = {
        "passed": passed,
        "runtime": {"reference": "torch (cpu, fp32)", "test": "onnxruntime CPUExecutionProvider"},
        "tolerance_rule": TOLERANCE_RULE,
        "atol": vcfg.atol,
        "rtol": vcfg.rtol,
        "metric_atol": vcfg.metric_atol,
        "metric_flip_pixels": vcfg.metric_flip_pixels,
        "samples": samples,
        "heads": held_out["heads"],
        "metrics_agree": held_out["metrics_agree"],
        "parity": held_out["parity"],
        "real_data": real,
        "verdict": " ".join(f"{h}:{'pass' if r['passed'] else 'FAIL'}" for h, r in held_out["heads"].items()),
    }
    if passed:
        return report, None
    failed = [h for h, r in held_out["heads"].items() if not r["passed"]]
    if failed:
        return report, f"heads over tolerance: {failed}"
    if held_out["metrics_agree"] is False:
        return report, "task metrics differ between runtimes"
    return report, "real NYUv2 sample comparison failed"


def save_comparison_arrays(
    out_dir: Path, data: ImageSet, held_out: Mapping[str, Any], batch_size: int, polygraphy_json: bool
) -> list[str]:
    """Inputs, targets and both runtimes' outputs (npz; Polygraphy JSON when asked) for the build stage.

    Returns:
        The file names written, in the order the stage records them (report.json included, written later).
    """
    save_npz(out_dir / "inputs.npz", {"image": data.images})
    save_npz(out_dir / "targets.npz", data.targets)
    save_npz(out_dir / "outputs_torch.npz", held_out["ref"])
    save_npz(out_dir / "outputs_onnxrt.npz", held_out["test"])
    files = ["inputs.npz", "targets.npz", "outputs_torch.npz", "outputs_onnxrt.npz", "report.json"]
    if polygraphy_json:
        n, bs = len(data.images), batch_size
        save_polygraphy_inputs(
            out_dir / "inputs.json", [{"image": data.images[i : i + bs]} for i in range(0, n, bs)]
        )
        chunks = [{k: v[i : i + bs] for k, v in held_out["ref"].items()} for i in range(0, n, bs)]
        save_polygraphy_outputs(out_dir / "outputs_torch.json", chunks, "torch")
        files += ["inputs.json", "outputs_torch.json"]
    return files
