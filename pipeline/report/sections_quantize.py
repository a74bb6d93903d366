"""`report.md` section for the int8 model: calibration, fp32 layers, the task-level gate and the latency table.

Reads the report dict's `quantize` and `latency` keys (`pipeline.report.json_report`); both are absent when
`quantize.mode` is none, and the section then says why.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from deploy.latency_table import format_latency_table
from pipeline.report.markdown_format import cell, fmt_value, stage_note, table


def _gate_lines(gate: Mapping[str, Any]) -> list[str]:
    rows = [
        [c["task"], c["name"], cell(c["value"]), ("≥ " if c["kind"] == "min" else "≤ ") + fmt_value(c["limit"]),
         "pass" if c["passed"] else "**FAIL**"]
        for c in gate.get("checks", [])
    ]
    return [table(["head", "check", "int8 vs fp32", "limit", "verdict"], rows)] if rows else []


def quantize_section(report: Mapping[str, Any]) -> str:
    """The `## INT8 quantization` section."""
    lines = ["## INT8 quantization"]
    q = report.get("quantize")
    if not q:
        return "\n\n".join([*lines, stage_note(report, "quantize")])
    lines.append(
        f"Calibration: {q.get('calibration_samples')} TRAIN images, `{q.get('calibration_method')}`, activations "
        f"`{q.get('activation_type')}`, weights {q.get('weight_type')}. Convs: {q.get('int8_convs')} int8, "
        f"{q.get('fp32_convs')} fp32" + (f" (left fp32: {', '.join(f'`{n}`' for n in q['excluded'])})"
                                          if q.get("excluded") else "") + "."
    )
    gate = q.get("gate")
    if gate:
        dt = gate.get("delta_t_vs_dense") or {}
        lines.append(
            f"Accuracy gate (validate, {gate.get('images')} VAL images): **{'PASSED' if gate['passed'] else 'FAILED'}**"
            + (f"; ΔT vs dense: int8 {dt['int8']:+.2f}, fp32 {dt['fp32']:+.2f} (percent points)" if dt else "")
        )
        lines += _gate_lines(gate.get("gate") or {})
    else:
        lines.append(f"Accuracy gate: {stage_note(report, 'validate')}")
    lat = report.get("latency")
    if lat:
        m = lat.get("machine") or {}
        lines.append(
            f"Latency, ONNX Runtime {m.get('onnxruntime')} CPU ({m.get('cpu_count')} logical CPUs), measured side by "
            f"side in one process; {lat['settings']['rounds']} rounds x {lat['settings']['iters_per_round']} runs "
            f"after {lat['settings']['warmup']} warm-up. {lat.get('note', '')}"
        )
        lines.append(format_latency_table(lat))
    return "\n\n".join(lines)
