"""`report.md` sections about the run and the deployment stages: header, verdicts, export, validation, build."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from pipeline.artifacts import RunDir
from pipeline.report.markdown_format import (
    STAGE_ORDER,
    VERDICT,
    cell,
    flag,
    fmt_bytes,
    fmt_value,
    heads_table,
    mapping_section,
    parity_table,
    stage_note,
    table,
)


def header_section(run: RunDir, report: Mapping[str, Any]) -> str:
    lines = [f"# Run report: {run.root.name}", "", f"Run directory: `{report.get('run_dir') or run.root}`"]
    if run.config_path.exists():
        try:
            cfg = yaml.safe_load(run.config_path.read_text()) or {}
        except Exception as e:  # the config is informational here
            lines.append(f"\n_config.yaml unreadable: {e}_")
        else:
            bits = []
            if isinstance(cfg, dict):
                model = cfg.get("model") or {}
                data = cfg.get("data") or {}
                train = cfg.get("train") or {}
                if isinstance(model, dict) and model.get("name"):
                    bits.append(f"model `{model['name']}`")
                if cfg.get("tasks"):
                    bits.append("tasks " + ", ".join(f"`{t}`" for t in cfg["tasks"]))
                if isinstance(data, dict) and data.get("name"):
                    bits.append(f"data `{data['name']}` ({data.get('height')}×{data.get('width')})")
                if isinstance(train, dict) and train.get("steps") is not None:
                    bits.append(f"{train['steps']} steps")
            if bits:
                lines.append("\nConfig: " + ", ".join(bits) + " (`config.yaml`)")
    lines.append(f"\nMachine-readable: `report.json` (schema `{report.get('schema', '?')}`).")
    return "\n".join(lines)


def verdicts_section(report: Mapping[str, Any]) -> str:
    stages = report.get("stages") or {}
    names = list(STAGE_ORDER) + [s for s in stages if s not in STAGE_ORDER]
    rows = []
    for name in names:
        e = stages.get(name) or {}
        status = e.get("status")
        secs = e.get("seconds")
        rows.append([
            f"`{name}`",
            VERDICT.get(status, cell(status)) if status else "not run",
            f"{secs:.1f}" if isinstance(secs, (int, float)) else "–",
            cell(e.get("started_at")),
            cell(e.get("reason")) if e.get("reason") else "",
        ])
    ran = [n for n in names if (stages.get(n) or {}).get("status")]
    failed = [n for n in ran if stages[n].get("status") == "failed"]
    summary = f"{sum(stages[n].get('status') == 'ok' for n in ran)} of {len(names)} stages passed"
    if failed:
        summary += "; failed: " + ", ".join(f"`{n}`" for n in failed)
    fs = report.get("failed_stage") or {}
    if fs.get("stage"):
        summary += f"; **the run stopped at `{fs['stage']}`**: {fs.get('reason', '')}"
    v = report.get("validation") or {}
    if "passed" in v:
        summary += f"; ONNX Runtime validation {'passed' if v['passed'] else '**FAILED**'}"
    b = report.get("build") or {}
    if b.get("status"):
        summary += f"; TensorRT build: {b['status']}"
    return "## Verdicts\n\n" + summary + ".\n\n" + table(["stage", "verdict", "seconds", "started", "reason"], rows)

def export_section(report: Mapping[str, Any]) -> str:
    out = ["## Export (ONNX)"]
    ex = report.get("export")
    if not isinstance(ex, Mapping) or not ex:
        out.append(stage_note(report, "export"))
        return "\n\n".join(out)
    raw, packed = ex.get("size_bytes"), ex.get("compressed_bytes")
    if all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in (raw, packed)) and packed:
        out.append(f"Zero pattern survived export: {flag(ex.get('sparsity_survived'))}. "
                   f"The compressed file is {raw / packed:.2f}× smaller than the ONNX file.")
    elif "sparsity_survived" in ex:
        out.append(f"Zero pattern survived export: {flag(ex.get('sparsity_survived'))}.")
    fmt = {"size_bytes": fmt_bytes, "compressed_bytes": fmt_bytes}
    first = ["onnx", "compressed", "opset", "exporter", "size_bytes", "compressed_bytes", "sparsity_survived"]
    out.append(mapping_section(ex, first, fmt, source="export/checks.json"))
    return "\n\n".join(out)


def validation_section(report: Mapping[str, Any]) -> str:
    out = ["## Validation (ONNX Runtime vs PyTorch)"]
    v = report.get("validation")
    if not isinstance(v, Mapping) or not v:
        out.append(stage_note(report, "validate"))
        return "\n\n".join(out)
    if "passed" in v:
        out.append(f"Verdict: **{'PASSED' if v['passed'] else 'FAILED'}**.")
    rest = {k: val for k, val in v.items() if k not in ("passed", "heads", "metrics_agree", "real_data", "parity")}
    heads = v.get("heads")
    if isinstance(heads, Mapping) and heads:
        out.append("Held-out samples, per head:")
        out.append(heads_table(heads))
    elif heads is not None:
        rest["heads"] = heads
    agree = v.get("metrics_agree")
    if isinstance(agree, Mapping):
        out.append("Task metrics agree:")
        out.append(mapping_section(agree))
    elif "metrics_agree" in v:
        out.append(f"Task metrics agree: {flag(agree)}.")
    if isinstance(v.get("parity"), Mapping) and v["parity"]:
        out.append(parity_table(v["parity"]))
    real = v.get("real_data")
    if isinstance(real, Mapping) and real:
        out.append("### Real data")
        head = [f"source `{real['source']}`" if real.get("source") else None,
                f"{real['samples']} samples" if real.get("samples") is not None else None,
                f"passed: {flag(real['passed'])}" if "passed" in real else None]
        out.append(", ".join(x for x in head if x) + ".")
        if isinstance(real.get("heads"), Mapping) and real["heads"]:
            out.append(heads_table(real["heads"]))
        if isinstance(real.get("parity"), Mapping) and real["parity"]:
            out.append(parity_table(real["parity"]))
        extra = {k: x for k, x in real.items() if k not in ("source", "samples", "passed", "heads", "parity")}
        if extra:
            out.append(mapping_section(extra, source="validate/report.json"))
    elif "real_data" in v:
        out.append("Real data: not checked (no real sample configured or found).")
    if rest:
        out.append(mapping_section(rest, source="validate/report.json"))
    return "\n\n".join(out)


def build_section(report: Mapping[str, Any]) -> str:
    out = ["## Build (TensorRT)"]
    b = report.get("build")
    if not isinstance(b, Mapping) or not b:
        out.append(stage_note(report, "build"))
        return "\n\n".join(out)
    status = b.get("status")
    if status in (None, "not run") and not (report.get("stages") or {}).get("build"):
        out.append(stage_note(report, "build"))
        return "\n\n".join(out)
    out.append(f"Status: **{fmt_value(status)}**" + (f" — {fmt_value(b.get('reason'))}" if b.get("reason") else "") + ".")
    rest = {k: v for k, v in b.items() if k not in ("status", "reason")}
    if rest:
        out.append(mapping_section(rest, ["sparse_speedup", "note"], source="build/report.json"))
    return "\n\n".join(out)
