"""The report's "deployable artifact" box: which file to ship, what it takes as input, how big it is against
the dense model, and what speed to expect on which runtime (measured here, or not).

`deployable_summary(export, io_spec, build)` builds `report.json["deployable"]` from `export/checks.json`,
`export/io_spec.json` and `build/report.json`; `deployable_section(report)` renders it (and a `latency` table
when the report data carries one) for `report.md`. Nothing is estimated: a number this run did not produce
is reported as missing, with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pipeline.report.markdown_format import cell, fmt_bytes, is_scalar, stage_note, table

_DTYPES = ("float32", "float16", "bfloat16", "int8", "uint8", "int32", "int64")
_LAYOUTS = ("NCHW", "NHWC")
# Dense weights leave almost nothing for gzip to find; only a dense export of this run could say how little.
DENSE_GZIP_NOTE = "not measured: this run exports no dense ONNX (the dense reference is a checkpoint only)"
DENSE_RAW_NOTE = "same graph and tensor shapes as the shipped file: its zeros are stored as float32"


def _input_spec(io_spec: Mapping[str, Any]) -> dict[str, Any]:
    """Name, dtype, layout, value range, shape and batch range of the model input, from io_spec.json."""
    meta = io_spec.get("metadata") or {}
    fmt = str(meta.get("input_format") or "")
    tokens = fmt.split()
    rng = re.search(r"\[[^\]]*\]", fmt)
    shape = io_spec.get("input_shape")
    name = io_spec.get("input_name")
    dynamic = (io_spec.get("dynamic_axes") or {}).get(name) or []
    max_batch = io_spec.get("max_batch")
    return {
        "name": name,
        "dtype": next((t for t in tokens if t in _DTYPES), None),
        "layout": next((t for t in tokens if t in _LAYOUTS), None),
        "channels": next((t for t in tokens if t in ("RGB", "BGR")), None),
        "range": rng.group(0) if rng else None,
        "shape": shape,
        "batch_range": [1, max_batch] if 0 in dynamic and max_batch else ([shape[0]] * 2 if shape else None),
        "dynamic_hw": meta.get("dynamic_hw") == "true" or bool({2, 3} & set(dynamic)),
    }


def _p50(entry: Any, batch: str) -> float | None:
    stats = ((entry or {}).get(batch) or {}).get("end_to_end") if isinstance(entry, Mapping) else None
    v = (stats or {}).get("p50_ms") if isinstance(stats, Mapping) else None
    return v if isinstance(v, (int, float)) else None


def _speed(build: Mapping[str, Any] | None) -> dict[str, Any]:
    """End-to-end p50 latency per runtime and batch from build/report.json; `measured` false with the reason
    when the build stage timed nothing here."""
    build = build or {}
    runtimes: dict[str, Any] = {}
    for kind, e in (build.get("engines") or {}).items():
        runtimes[f"TensorRT {kind} engine"] = ((e or {}).get("checks") or {}).get("latency")
    ort = build.get("ort_gpu") or {}
    if ort.get("status") in ("ok", "failed"):
        runtimes[f"ONNX Runtime GPU ({ort.get('provider')})"] = (ort.get("checks") or {}).get("latency")
    rows = [
        {"runtime": rt, "batch": int(b), "p50_ms": _p50(lat, b)}
        for rt, lat in runtimes.items() if isinstance(lat, Mapping)
        for b in sorted(lat, key=lambda x: int(x)) if _p50(lat, b) is not None
    ]
    gpu = (build.get("environment") or {}).get("gpu")
    out: dict[str, Any] = {
        "measured": bool(rows),
        "device": (gpu.get("name") if isinstance(gpu, Mapping) else gpu) if gpu else None,
        "latency": rows,
        "sparse_speedup": build.get("sparse_speedup"),
    }
    if not rows:
        out["reason"] = f"build {build.get('status') or 'not run'}" + (f": {build['reason']}" if build.get("reason") else "")
    return out


def deployable_summary(
    export: Mapping[str, Any] | None, io_spec: Mapping[str, Any] | None, build: Mapping[str, Any] | None,
) -> dict[str, Any] | None:
    """`report.json["deployable"]`; None when nothing was exported."""
    if not export:
        return None
    raw, gz = export.get("size_bytes"), export.get("compressed_bytes")
    return {
        "artifact": export.get("onnx"),
        "compressed": export.get("compressed"),
        "runtime_format": f"ONNX opset {export.get('opset')}",
        "input": _input_spec(io_spec) if io_spec else None,
        "outputs": (io_spec or {}).get("output_shapes"),
        "size": {"raw_bytes": raw, "gzip_bytes": gz},
        "dense": {"raw_bytes": raw, "raw_note": DENSE_RAW_NOTE, "gzip_bytes": None, "gzip_note": DENSE_GZIP_NOTE},
        "speed": _speed(build),
    }


def _input_line(spec: Mapping[str, Any] | None) -> str:
    if not spec:
        return "- input: _export/io_spec.json missing_"
    br = spec.get("batch_range")
    bits = [f"`{spec.get('name')}`", cell(spec.get("dtype")), cell(spec.get("layout")),
            f"{cell(spec.get('channels'))} in {cell(spec.get('range'))}", f"shape {cell(spec.get('shape'))}",
            f"batch {br[0]}–{br[1]}" if br else "batch –",
            "any height/width" if spec.get("dynamic_hw") else "fixed height/width"]
    return "- input: " + ", ".join(bits)


def _speed_lines(speed: Mapping[str, Any]) -> list[str]:
    if not speed.get("measured"):
        return [f"- speed: **not measured here** ({speed.get('reason')}); run `pipeline build` on the target GPU"]
    where = f" on {speed['device']}" if speed.get("device") else ""
    rows = [[r["runtime"], cell(r["batch"]), cell(r["p50_ms"], 3)] for r in speed.get("latency") or []]
    lines = [f"- speed: measured here{where}, end-to-end p50"
             + (f"; sparse over dense speedup {cell(speed.get('sparse_speedup'), 3)}×" if speed.get("sparse_speedup") else "")]
    return lines + ["", table(["runtime", "batch", "p50 ms"], rows)]


def deployable_section(report: Mapping[str, Any]) -> str:
    out = ["## Deployable artifact"]
    d = report.get("deployable")
    if not isinstance(d, Mapping) or not d:
        out.append(stage_note(report, "export"))
        return "\n\n".join(out)
    size, dense = d.get("size") or {}, d.get("dense") or {}
    raw, gz = size.get("raw_bytes"), size.get("gzip_bytes")
    ratio = f" ({raw / gz:.2f}× smaller)" if isinstance(raw, int) and isinstance(gz, int) and gz else ""
    lines = [
        f"- ship: `{d.get('artifact')}` ({d.get('runtime_format')}); `{d.get('compressed')}` to transfer it",
        _input_line(d.get("input")),
        "- outputs: " + ", ".join(f"`{k}` {cell(v)}" for k, v in (d.get("outputs") or {}).items()),
        f"- size: {fmt_bytes(raw)} raw, {fmt_bytes(gz)} gzipped{ratio}",
        f"- dense model: {fmt_bytes(dense.get('raw_bytes'))} raw ({dense.get('raw_note')}); gzipped: "
        + (fmt_bytes(dense["gzip_bytes"]) if dense.get("gzip_bytes") else f"_{dense.get('gzip_note')}_"),
    ]
    v = report.get("validation") or {}
    if "passed" in v:
        lines.append("- accuracy: checked here on ONNX Runtime (CPU) against PyTorch: "
                     + ("passed" if v["passed"] else "**FAILED**") + " (not timed)")
    out.append("\n".join(lines + _speed_lines(d.get("speed") or {})))
    latency = latency_table(report.get("latency"))
    if latency:
        out += ["Latency:", latency]
    return "\n\n".join(out)


def latency_table(latency: Any) -> str:
    """A `latency` entry of the report data as a table: {name: {stat: value}} or a list of flat dicts;
    "" when there is none."""
    if isinstance(latency, Mapping):
        rows_in = [{"name": k, **v} if isinstance(v, Mapping) else {"name": k, "value": v} for k, v in latency.items()]
    elif isinstance(latency, list):
        rows_in = [r for r in latency if isinstance(r, Mapping)]
    else:
        return ""
    cols = list(dict.fromkeys(k for r in rows_in for k, v in r.items() if is_scalar(v)))
    return table(cols, [[cell(r.get(c), 4) for c in cols] for r in rows_in]) if rows_in and cols else ""
