"""int8's task-metric cost on the quality benchmark (issue #16): `python -m benchmarks.quality --int8`.

For each trained (non-dense) run of `benchmarks.quality`, before its checkpoint is deleted, `int8_cost` takes the
model through the same library calls the harden, export, quantize and validate stages make
(`trainers.hardening.harden_checkpoint`, `exporters.artifact.export_hardened`,
`deploy.quantize_stage.quantize_exported` (which calls `exporters.quantize.quantize_int8`, with the per-layer
fp32 search when `quantize.auto_exclude`) calibrated on TRAIN images, and `deploy.quantize_stage.int8_gate_report`
on the whole VAL split with ONNX Runtime CPU). The latency table the quantize stage also writes is cut to one
cheap configuration here: this benchmark measures accuracy, the cost benchmark measures time.

`aggregate_int8` pairs, per seed, the int8 model's ΔT and the fp32 ONNX model's ΔT against the SAME seed's dense
model, and gives the paired difference int8 − fp32 with its 95 % t-interval.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import statistics
from pathlib import Path
from typing import Any

from benchmarks.aggregate import paired_interval
from benchmarks.provenance import describe
from deploy.quantize_stage import INT8_NAME, int8_gate_report, quantize_exported, split_arrays
from exporters.artifact import export_hardened
from pipeline.checkpoint import TrainCheckpoint, read_checkpoint, write_checkpoint
from pipeline.config import RunConfig
from pipeline.data import build_dataset
from pipeline.metrics.summary import delta_t
from trainers.hardening import harden_checkpoint

__all__ = ["GATE_KEYS", "aggregate_int8", "int8_cost", "int8_markdown", "write_int8_results"]

# (task, gate check name) -> the key this benchmark reports it under
GATE_KEYS = {
    ("seg", "argmax_agreement_pct"): "seg_argmax_agreement_pct",
    ("seg", "miou_drop"): "seg_miou_drop",
    ("depth", "abs_err_increase_m"): "depth_abs_err_increase_m",
    ("normal", "mean_angle_increase_deg"): "normal_mean_angle_increase_deg",
}


def int8_cost(cfg: RunConfig, run_dir: Path) -> dict[str, Any]:
    """Harden, export and quantize the run's `checkpoint.pt`, then gate int8 against fp32 on the VAL split.

    The intermediate files go to `run_dir/int8_work` and are deleted afterwards (the benchmark cache keeps
    summaries only). Returns the fp32 and int8 ONNX metrics, the gate's numbers and what the quantizer did.
    """
    run_dir = Path(run_dir)
    src = run_dir / "checkpoint.pt"
    work = run_dir / "int8_work"
    (work / "export").mkdir(parents=True, exist_ok=True)
    (work / "quantize").mkdir(parents=True, exist_ok=True)
    tasks = list(cfg.tasks)
    try:
        hardened = harden_checkpoint(cfg, read_checkpoint(src, TrainCheckpoint), src, progress=False,
                                     source_name=str(src))
        write_checkpoint(work / "model.pt", hardened.checkpoint)
        exported = export_hardened(work / "model.pt", work / "export", cfg.export, height=cfg.data.height,
                                   width=cfg.data.width, source_run=run_dir.name)
        onnx_path = work / "export" / "model.onnx"
        train = build_dataset(cfg.data, "train", tasks)
        num_classes = int(train.num_classes)
        # the stage's own calibration draw: one more than asked, so a too-large count names the split's size
        calibration = split_arrays(train, cfg.quantize.calibration_samples + 1, tasks)
        q = dataclasses.replace(cfg.quantize, latency_batches=[1], latency_threads=[1], latency_warmup=0,
                                latency_rounds=1, latency_iters=1)
        quantized = quantize_exported(onnx_path, work / "quantize", q, calibration, tasks, num_classes,
                                      hw=(cfg.data.height, cfg.data.width), export_cfg=cfg.export)
        images, targets = split_arrays(build_dataset(cfg.data, "val", tasks), None, tasks)
        gate = int8_gate_report(onnx_path, work / "quantize" / INT8_NAME, images, targets, tasks, num_classes,
                                cfg.quantize, None, cfg.validate.batch_size)
        sizes = quantized.latency["sizes"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    checks = {GATE_KEYS[c["task"], c["name"]]: c["value"] for c in gate["gate"]["checks"]
              if (c["task"], c["name"]) in GATE_KEYS}
    return {
        "hardened_torch_metrics": hardened.metrics,
        "fp32_metrics": gate["metrics"]["fp32"],
        "int8_metrics": gate["metrics"]["int8"],
        "gate_passed": gate["passed"],
        "gate_message": gate["message"],
        "gate": checks,
        "val_images": gate["images"],
        "exported_sparsity_survived": exported.checks["sparsity_survived"],
        "quantize": {k: quantized.quantize[k] for k in ("calibration_method", "calibration_samples", "excluded",
                                                         "int8_convs", "fp32_convs")}
        | {"calibration_gate_passed": quantized.quantize["calibration_gate"]["passed"],
           "calibration_split": quantized.quantize["calibration_split"]},
        "sizes": {"pruned_fp32": sizes["pruned_fp32"], "pruned_int8": sizes["pruned_int8"]},
    }


def _mean_sd(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}


def aggregate_int8(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per (method, target): int8 and fp32 ΔT against the same seed's dense model, the paired int8 − fp32
    difference with its 95 % t-interval, and the gate's numbers (mean, sd, per seed).

    Runs without an `int8` entry (dense, or cached without --int8) and seeds without a dense run are skipped.
    """
    dense = {r["seed"]: r["metrics"] for r in results if r["method"] == "dense"}
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for r in results:
        if r["method"] != "dense" and "int8" in r and r["seed"] in dense:
            groups.setdefault((r["method"], r["target"]), []).append(r)
    rows = []
    for (method, target), runs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        runs = sorted(runs, key=lambda r: r["seed"])
        per_seed = []
        for r in runs:
            ref = dense[r["seed"]]
            dt_fp32 = delta_t(r["int8"]["fp32_metrics"], ref)["overall"]
            dt_int8 = delta_t(r["int8"]["int8_metrics"], ref)["overall"]
            per_seed.append({"seed": r["seed"], "delta_t_fp32": dt_fp32, "delta_t_int8": dt_int8,
                             "int8_minus_fp32": dt_int8 - dt_fp32, "gate_passed": r["int8"]["gate_passed"],
                             "excluded": r["int8"]["quantize"]["excluded"],
                             "calibration_gate_passed": r["int8"]["quantize"].get("calibration_gate_passed"),
                             **r["int8"]["gate"]})
        diffs = [p["int8_minus_fp32"] for p in per_seed]
        mean, lo, hi = paired_interval(diffs)
        gate_keys = [k for k in GATE_KEYS.values() if all(k in p for p in per_seed)]
        rows.append({
            "method": method, "target": target, "seeds": [p["seed"] for p in per_seed],
            "delta_t_fp32": _mean_sd([p["delta_t_fp32"] for p in per_seed]),
            "delta_t_int8": _mean_sd([p["delta_t_int8"] for p in per_seed]),
            "int8_minus_fp32": mean, "int8_minus_fp32_ci95": [lo, hi],
            "gate": {k: _mean_sd([p[k] for p in per_seed]) for k in gate_keys},
            "gate_passed": sum(p["gate_passed"] for p in per_seed),
            "int8_metrics": _mean_metrics([r["int8"]["int8_metrics"] for r in runs]),
            "fp32_metrics": _mean_metrics([r["int8"]["fp32_metrics"] for r in runs]),
            "size_ratio_raw": statistics.fmean(r["int8"]["sizes"]["pruned_int8"]["raw_bytes"]
                                               / r["int8"]["sizes"]["pruned_fp32"]["raw_bytes"] for r in runs),
            "per_seed": per_seed,
        })
    return {"reference": "the same seed's dense model (torch, val split)", "rows": rows}


def _mean_metrics(ms: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {t: {k: statistics.fmean(m[t][k] for m in ms) for k in ms[0][t]} for t in ms[0]}


def int8_markdown(agg: dict[str, Any], meta: dict[str, Any]) -> str:
    """The int8 section of results.md."""
    lines = [
        "## int8 (QDQ) cost in task metrics", "",
        f"Each trained run hardened, exported and quantized with the stages' library calls (calibration: "
        f"TRAIN split, the preset's `quantize:` section), then both ONNX models scored on the whole VAL split "
        f"with ONNX Runtime CPU ({meta.get('onnxruntime', '?')}); {describe(meta) if 'git_commit' in meta else ''}. "
        f"ΔT is against {agg['reference']}. 'int8 − fp32' is the paired difference on the same seed, its mean "
        "and 95 % t-interval (negative: int8 loses). Gate numbers: seg argmax agreement (%), mIoU drop (points), "
        "depth abs-err increase (m), normal mean-angle increase (°); mean ± sd over seeds.", "",
        "| target | method | seeds | ΔT fp32 ONNX | ΔT int8 | int8 − fp32 (95 % CI) | seg agree % | mIoU drop | "
        "depth Δabs m | normal Δ° | gate passed | int8/fp32 size |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in agg["rows"]:
        g = r["gate"]

        def cell(k: str, d: int, g: dict[str, Any] = g) -> str:
            return f"{g[k]['mean']:.{d}f} ± {g[k]['sd']:.{d}f}" if k in g else "–"

        lo, hi = r["int8_minus_fp32_ci95"]
        lines.append(
            f"| {r['target']:.2f} | {r['method']} | {len(r['seeds'])} | "
            f"{r['delta_t_fp32']['mean']:+.2f} ± {r['delta_t_fp32']['sd']:.2f} | "
            f"{r['delta_t_int8']['mean']:+.2f} ± {r['delta_t_int8']['sd']:.2f} | "
            f"{r['int8_minus_fp32']:+.3f} ({lo:+.3f}, {hi:+.3f}) | {cell('seg_argmax_agreement_pct', 2)} | "
            f"{cell('seg_miou_drop', 3)} | {cell('depth_abs_err_increase_m', 4)} | "
            f"{cell('normal_mean_angle_increase_deg', 3)} | {r['gate_passed']}/{len(r['seeds'])} | "
            f"{r['size_ratio_raw']:.3f} |"
        )
    lines += ["", "Per seed (ΔT fp32 → int8; layers the quantize stage's search left in fp32; whether the int8 "
              "model passed the gate on the TRAIN calibration images, where the search judges it):", ""]
    for r in agg["rows"]:
        for p in r["per_seed"]:
            lines.append(f"- {r['method']} @ {r['target']:.2f} seed {p['seed']}: {p['delta_t_fp32']:+.2f} → "
                         f"{p['delta_t_int8']:+.2f} ({p['int8_minus_fp32']:+.3f}); "
                         f"fp32 layers: {', '.join(p['excluded']) or 'none'}; calibration gate "
                         f"{'passed' if p['calibration_gate_passed'] else 'failed'}, VAL gate "
                         f"{'passed' if p['gate_passed'] else 'failed'}")
    return "\n".join(lines) + "\n"


def write_int8_results(results: list[dict[str, Any]], meta: dict[str, Any], out: Path) -> dict[str, Any]:
    """Add the int8 aggregation to the `results.json` / `results.md` that `aggregate.write_results` wrote."""
    import onnxruntime

    meta = {**meta, "onnxruntime": onnxruntime.__version__}
    agg = aggregate_int8(results)
    path = Path(out) / "results.json"
    data = json.loads(path.read_text()) if path.exists() else {"meta": meta}
    data["meta"] = {**data.get("meta", {}), "onnxruntime": meta["onnxruntime"]}
    data["int8"] = agg
    path.write_text(json.dumps(data, indent=1))
    md = Path(out) / "results.md"
    md.write_text((md.read_text() if md.exists() else "") + "\n" + int8_markdown(agg, meta))
    return agg
