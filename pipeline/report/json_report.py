"""The run report: `report.json` (stable keys users script against) and `report.md` with plots.

Stable keys: `sparsity`, `metrics` (`pruned`, `dense`), `delta_t`, `delta_p`, `export`, `validation`, `build`;
`quantize` and `latency` when `quantize.mode` is int8.
More keys may be added; none of these are renamed. Added: `deployable` (what to ship, its input spec, sizes
and expected speed, see `pipeline.report.deployable`), `delta_t_noise` (only when the dense reference records
the ΔT spread of dense seeds, as `reference.delta_t_noise` in train/metrics.json).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.artifacts import RunDir, atomic_write_json, read_json
from pipeline.metrics.summary import delta_p, delta_t
from pipeline.report import markdown
from pipeline.report.deployable import deployable_summary

REPORT_SCHEMA = "mtl-compress.report/1"


def _maybe(path: Path) -> Any:
    return read_json(path) if path.exists() else None


def _quantize_keys(run: RunDir) -> dict[str, Any]:
    """`quantize` (the int8 model, with validate's gate under `gate`) and `latency`; absent when mode is none."""
    quantize = _maybe(run.path("quantize", "quantize.json"))
    if not quantize:
        return {}
    gate = _maybe(run.path("validate", "int8_gate.json"))
    return {"quantize": {**quantize, "gate": gate}, "latency": _maybe(run.path("quantize", "latency.json"))}


def build_run_report(run: RunDir) -> dict[str, Any]:
    manifest = run.load_manifest()
    stages = {
        name: {k: entry.get(k) for k in ("status", "reason", "seconds", "started_at")}
        for name, entry in manifest.get("stages", {}).items()
    }
    train_sp = _maybe(run.path("train", "sparsity.json"))
    train_m = _maybe(run.path("train", "metrics.json"))
    hard_sp = _maybe(run.path("harden", "sparsity.json"))
    hard_m = _maybe(run.path("harden", "metrics.json"))
    export = _maybe(run.path("export", "checks.json"))
    validation = _maybe(run.path("validate", "report.json"))
    build = _maybe(run.path("build", "report.json"))

    report: dict[str, Any] = {"schema": REPORT_SCHEMA, "run_dir": str(run.root), "stages": stages}
    if train_sp:
        sp = hard_sp or train_sp
        report["sparsity"] = {
            "target": train_sp["target"],
            "overall": sp["overall"],
            "components": sp["components"],
            "pattern": hard_sp["pattern"] if hard_sp else "unstructured",
            "method": train_sp["method"],
            "trained_overall": train_sp["overall"],
            "trained_components": train_sp["components"],
            "thresholds": train_sp.get("thresholds", {}),
        }
        if train_sp.get("structure") == "channel":  # overall/components are MAC fractions, as the target is
            ch = (hard_sp or {}).get("channels") or {}
            report["sparsity"] |= {
                "structure": "channel",
                "param_sparsity": sp.get("param_sparsity"),
                "macs_dense": ch.get("macs_dense", (sp.get("channels") or {}).get("dense_macs")),
                "macs_kept": ch.get("macs_compact", (sp.get("channels") or {}).get("remaining_macs")),
                "channel_multiple": ch.get("channel_multiple"),
                "macs_removed_as_trained": ch.get("mac_fraction_removed_before_rounding"),
            }
    if train_m:
        ref = train_m.get("reference") or {}
        pruned = (hard_m or {}).get("metrics") or train_m["metrics"]
        report["metrics"] = {
            "pruned": pruned,
            "trained": train_m["metrics"],
            "dense": ref.get("dense"),
            "constant_predictor": train_m.get("constant_predictor"),
        }
        if ref.get("dense"):
            dt, dp = delta_t(pruned, ref["dense"]), delta_p(pruned, ref["dense"])
            report["delta_t"], report["delta_p"] = dt["overall"], dp["overall"]
            report["delta_t_per_task"], report["delta_p_per_task"] = dt["per_task"], dp["per_task"]
            report["dense_reference"] = ref.get("dense_source")
            if ref.get("delta_t_noise") is not None:  # only a measured spread; never invented
                report["delta_t_noise"] = ref["delta_t_noise"]
        else:
            report["delta_t"] = report["delta_p"] = None
    if export:
        report["export"] = export
    if validation:
        report["validation"] = {
            "passed": validation["passed"],
            "heads": validation["heads"],
            "metrics_agree": validation["metrics_agree"],
            "real_data": validation.get("real_data"),
        }
    report.update(_quantize_keys(run))
    report["build"] = build or {"status": stages.get("build", {}).get("status", "not run"),
                                "reason": stages.get("build", {}).get("reason")}
    deployable = deployable_summary(export, _maybe(run.path("export", "io_spec.json")), report["build"])
    if deployable:
        report["deployable"] = deployable
    return report


def write_run_report(run: RunDir, failed_stage: dict[str, str] | None = None) -> dict[str, Any]:
    """Write `<run>/report.json` and `<run>/report.md` (with plots); return the report dict.

    `failed_stage` (`{"stage", "reason", "error"}`) marks a stage that raised before the manifest recorded it, so
    both files carry its verdict and reason.
    """
    report = build_run_report(run)
    if failed_stage:
        name = failed_stage["stage"]
        report["stages"][name] = {**report["stages"].get(name, {}), "status": "failed", "reason": failed_stage["reason"]}
        report["failed_stage"] = dict(failed_stage)
    atomic_write_json(run.report_path, report)
    markdown.write_markdown_report(run, report)  # via the module so tests can stand in for it
    return report
