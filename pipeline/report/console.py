"""Plain-text console summary of a run report, printed at the end of `pipeline run all` and `pipeline report`."""

from __future__ import annotations

from typing import Any

from deploy.latency_table import format_latency_table
from pipeline.metrics.summary import known_directions


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def format_summary(report: dict[str, Any]) -> str:
    lines = ["", "== summary =="]
    sp = report.get("sparsity")
    if sp:
        comps = "  ".join(f"{c}={v:.3f}" for c, v in sp["components"].items())
        if sp.get("structure") == "channel":  # the target is a MAC fraction: compare it with MACs removed
            lines.append(
                f"sparsity  method={sp['method']} structure=channel target={sp['target']:.3f} (MACs) "
                f"macs_removed={sp['overall']:.4f}   {comps}"
            )
            rounding = ""
            if (sp.get("channel_multiple") or 1) > 1 and sp.get("macs_removed_as_trained") is not None:
                rounding = (f"  (kept channels rounded up to multiples of {sp['channel_multiple']}; "
                            f"{sp['macs_removed_as_trained']:.4f} as trained)")
            lines.append(f"          params_removed={_fmt(sp.get('param_sparsity'))}  MACs kept "
                         f"{_fmt(sp.get('macs_kept'))} of {_fmt(sp.get('macs_dense'))}{rounding}")
        else:
            lines.append(
                f"sparsity  method={sp['method']} pattern={sp['pattern']} target={sp['target']:.3f} "
                f"overall={sp['overall']:.4f}   {comps}"
            )
    m = report.get("metrics")
    if m:
        lines.append(f"{'task':7s} {'metric':13s} {'pruned':>10s} {'dense':>10s} {'constant':>10s}")
        for task, values in m["pruned"].items():
            dense = (m.get("dense") or {}).get(task, {})
            const = (m.get("constant_predictor") or {}).get(task, {})
            for name in known_directions(task, values) or values:
                if name in values:
                    lines.append(
                        f"{task:7s} {name:13s} {_fmt(values[name]):>10s} {_fmt(dense.get(name)):>10s} "
                        f"{_fmt(const.get(name)):>10s}"
                    )
        if report.get("delta_t") is not None:
            lines.append(f"delta_t {report['delta_t']:+.2f}   delta_p {report['delta_p']:+.2f}   (vs dense, percent points)")
    ex = report.get("export")
    if ex:
        lines.append(
            f"export    {ex.get('onnx')}  opset={ex.get('opset')}  size={ex.get('size_bytes')}B  "
            f"gzip={ex.get('compressed_bytes')}B  sparsity survived={ex.get('sparsity_survived')}"
        )
    v = report.get("validation")
    if v:
        heads = "  ".join(f"{h}:{'pass' if r['passed'] else 'FAIL'}(max {r['max_abs']:.1e})" for h, r in v["heads"].items())
        lines.append(f"validate  {'PASSED' if v['passed'] else 'FAILED'}  {heads}  metrics agree={v['metrics_agree']}")
    lines += quantize_summary(report)
    b = report.get("build") or {}
    lines.append(f"build     {b.get('status')}" + (f" ({b.get('reason')})" if b.get("reason") else ""))
    return "\n".join(lines)


def quantize_summary(report: dict[str, Any]) -> list[str]:
    """The int8 verdict (with the failing heads and numbers) and the latency table; nothing when mode is none."""
    q = report.get("quantize")
    if not q:
        return []
    gate = q.get("gate") or {}
    verdict = gate.get("message") or "int8 accuracy gate not run (validate has not run)"
    dt = (gate.get("delta_t_vs_dense") or {}).get("int8")
    lines = [f"int8      {verdict}  fp32 convs={q.get('fp32_convs')}" + (f"  delta_t {dt:+.2f}" if dt is not None else "")]
    lat = report.get("latency")
    if lat:
        lines += ["latency   ONNX Runtime CPU, " + (lat.get("note") or ""), format_latency_table(lat)]
    return lines


def format_key_numbers(report: dict[str, Any]) -> str:
    """The numbers `pipeline show` prints under the stage table: sparsity, ΔT, parity, sizes, speed."""
    lines = []
    sp = report.get("sparsity")
    if sp and sp.get("structure") == "channel":
        lines.append(f"sparsity   MACs removed {_fmt(sp.get('overall'))} (target {_fmt(sp.get('target'))}), "
                     f"parameters removed {_fmt(sp.get('param_sparsity'))}, structure channel, "
                     f"method {sp.get('method')}")
    elif sp:
        lines.append(f"sparsity   overall {_fmt(sp.get('overall'))} (target {_fmt(sp.get('target'))}), "
                     f"pattern {sp.get('pattern')}, method {sp.get('method')}")
    if report.get("delta_t") is not None:
        lines.append(f"delta_t    {report['delta_t']:+.2f}%  (delta_p {report['delta_p']:+.2f}%, vs dense "
                     f"{report.get('dense_reference') or 'reference'})")
    elif report.get("metrics"):
        lines.append("delta_t    - (no dense reference)")
    v = report.get("validation")
    if v:
        worst = max((h.get("max_abs") for h in (v.get("heads") or {}).values() if isinstance(h.get("max_abs"), float)),
                    default=None)
        lines.append(f"parity     ONNX Runtime vs PyTorch {'passed' if v.get('passed') else 'FAILED'}, "
                     f"max abs diff {_fmt(worst)}, task metrics agree {v.get('metrics_agree')}")
    ex = report.get("export")
    if ex:
        lines.append(f"size       {ex.get('onnx')} {_fmt(ex.get('size_bytes'))} B, gzipped "
                     f"{_fmt(ex.get('compressed_bytes'))} B")
    speed = (report.get("deployable") or {}).get("speed") or {}
    if speed.get("measured"):
        best = min(speed["latency"], key=lambda r: r["p50_ms"])
        lines.append(f"speed      {best['runtime']} p50 {best['p50_ms']:.3g} ms at batch {best['batch']}")
    elif ex:
        lines.append("speed      not measured here (build did not time an engine)")
    return "\n".join(lines)
