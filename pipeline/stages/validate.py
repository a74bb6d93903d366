"""validate stage: ONNX Runtime (CPU) vs the PyTorch hardened model, per head and per task metric.

Inputs and both runtimes' outputs are saved (npz, plus Polygraphy JSON when asked) so the build stage can
compare a TensorRT engine against the same reference in another process.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from pipeline.artifacts import atomic_write_json
from pipeline.data.batching import gather
from pipeline.stages import StageContext, StageRecord

log = logging.getLogger(__name__)


def _arrays(dataset, n: int, tasks: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The first `n` samples (at most the split) as numpy arrays, drawn through the one batching path."""
    batch = gather(dataset, torch.arange(min(n, len(dataset))))
    return batch["image"].numpy().astype(np.float32), {t: batch[t].numpy() for t in tasks}


def _compare(model, onnx_path, images, targets, tasks, num_classes, vcfg, metric_tasks=None) -> dict[str, Any]:
    """Both runtimes on the same images; elementwise per head, task metrics for `metric_tasks`."""
    from deploy.compare import compare_outputs, task_parity
    from deploy.runners import OnnxrtRunner, TorchRunner, run_batched

    feed = {"image": images}
    with TorchRunner(model, output_names=tasks) as ref_runner:
        ref = run_batched(ref_runner, feed, vcfg.batch_size)
    with OnnxrtRunner(onnx_path, providers=["CPUExecutionProvider"]) as ort_runner:
        test = run_batched(ort_runner, feed, vcfg.batch_size)
    heads = compare_outputs(ref, test, vcfg.atol, vcfg.rtol)
    metric_tasks = tasks if metric_tasks is None else metric_tasks
    parity = (
        task_parity(ref, test, targets, metric_tasks, num_classes, metric_atol=vcfg.metric_atol) if metric_tasks else {}
    )
    return {
        "ref": ref,
        "test": test,
        "heads": {h.name: h.to_dict() for h in heads},
        "heads_passed": all(bool(h) for h in heads),
        "parity": parity,
        "metrics_agree": all(p["passed"] for p in parity.values()) if parity else None,
    }


def run(ctx: StageContext) -> StageRecord:
    from deploy.io import save_npz, save_polygraphy_inputs, save_polygraphy_outputs
    from pipeline.data import build_dataset
    from pipeline.data.nyuv2_png import find_realdata, load_nyuv2_png
    from pipeline.models.hardened import load_hardened_model

    cfg, vcfg = ctx.cfg, ctx.cfg.validate
    model, ckpt = load_hardened_model(ctx.run.path("harden", "model.pt"))
    onnx_path = ctx.run.path("export", "model.onnx")
    tasks, num_classes = list(ckpt["tasks"]), int(ckpt["num_classes"])

    val = build_dataset(cfg.data, "val", tasks)
    images, targets = _arrays(val, vcfg.samples, tasks)
    held_out = _compare(model, onnx_path, images, targets, tasks, num_classes, vcfg)
    save_npz(ctx.out / "inputs.npz", {"image": images})
    save_npz(ctx.out / "targets.npz", targets)
    save_npz(ctx.out / "outputs_torch.npz", held_out["ref"])
    save_npz(ctx.out / "outputs_onnxrt.npz", held_out["test"])
    outputs = ["inputs.npz", "targets.npz", "outputs_torch.npz", "outputs_onnxrt.npz", "report.json"]
    if vcfg.save_polygraphy_json:
        bs = vcfg.batch_size
        feeds = [{"image": images[i : i + bs]} for i in range(0, len(images), bs)]
        save_polygraphy_inputs(ctx.out / "inputs.json", feeds)
        chunks = [{k: v[i : i + bs] for k, v in held_out["ref"].items()} for i in range(0, len(images), bs)]
        save_polygraphy_outputs(ctx.out / "outputs_torch.json", chunks, "torch")
        outputs += ["inputs.json", "outputs_torch.json"]

    real: dict[str, Any] | None = None
    real_root = None if vcfg.real_data is None else (find_realdata() if vcfg.real_data == "auto" else vcfg.real_data)
    if real_root is not None:
        real_set = load_nyuv2_png(real_root, tasks, cfg.data.height, cfg.data.width)
        r_images, r_targets = _arrays(real_set, vcfg.real_samples, tasks)
        # The model's classes are the training set's; NYUv2's 13 classes only line up when it was trained on them.
        r_tasks = [t for t in tasks if t != "seg" or real_set.num_classes == num_classes]
        r = _compare(model, onnx_path, r_images, r_targets, tasks, num_classes, vcfg, metric_tasks=r_tasks)
        save_npz(ctx.out / "real_inputs.npz", {"image": r_images})
        save_npz(ctx.out / "real_outputs_torch.npz", r["ref"])
        outputs += ["real_inputs.npz", "real_outputs_torch.npz"]
        real = {
            "source": str(real_root),
            "samples": len(r_images),
            "passed": r["heads_passed"] and r["metrics_agree"] is not False,
            "heads": r["heads"],
            "metrics_agree": r["metrics_agree"],
            "parity": r["parity"],
            "seg_compared_as": "metrics" if "seg" in r_tasks else "argmax agreement only (class sets differ)",
        }
        if "seg" in tasks and "seg" not in r_tasks:
            same = float((r["ref"]["seg"].argmax(1) == r["test"]["seg"].argmax(1)).mean() * 100)
            real["seg_argmax_agreement_pct"] = same
    elif vcfg.real_data is not None:
        log.warning("real NYUv2 sample not found; validated on the embedded dataset only")

    passed = held_out["heads_passed"] and held_out["metrics_agree"] is not False and (real is None or real["passed"])
    report = {
        "passed": passed,
        "runtime": {"reference": "torch (cpu, fp32)", "test": "onnxruntime CPUExecutionProvider"},
        "tolerance_rule": "|onnx - torch| <= atol + rtol * |torch| elementwise; metrics |delta| <= metric_atol",
        "atol": vcfg.atol,
        "rtol": vcfg.rtol,
        "metric_atol": vcfg.metric_atol,
        "samples": len(images),
        "heads": held_out["heads"],
        "metrics_agree": held_out["metrics_agree"],
        "parity": held_out["parity"],
        "real_data": real,
        "verdict": " ".join(f"{h}:{'pass' if r['passed'] else 'FAIL'}" for h, r in held_out["heads"].items()),
    }
    atomic_write_json(ctx.out / "report.json", report)
    failed = [h for h, r in held_out["heads"].items() if not r["passed"]]
    reason = None
    if not passed:
        reason = (
            f"heads over tolerance: {failed}" if failed else
            "task metrics differ between runtimes" if held_out["metrics_agree"] is False else
            "real NYUv2 sample comparison failed"
        )
    return StageRecord(
        status="ok" if passed else "failed",
        reason=reason,
        outputs=outputs,
        summary={"passed": passed, "verdict": report["verdict"], "metrics_agree": held_out["metrics_agree"],
                 "real_data": None if real is None else real["passed"]},
    )
