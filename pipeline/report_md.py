"""`report.md`: the human-readable run report, with PNG plots in `<run>/report_plots/`.

`write_markdown_report(run, report)` is called by `pipeline.report.write_run_report` after `report.json` is
written (every stage command, `pipeline run all`, `pipeline report --run-dir DIR`). It reads the report dict
plus the per-stage files it summarises (`train/timeseries.json`, `train/sparsity.json`,
`harden/sparsity.json`) and copes with any of them missing: a run that stopped after train still gets a
report whose later sections say "not run".

A figure that fails (matplotlib missing, odd data) is logged and noted as "plot unavailable: <reason>" in
the Markdown; the report is still written. Errors in assembling the Markdown itself are bugs and raise.

`write_tensorboard(run)` writes the same series as TensorBoard scalars when the `tensorboard` package is
installed (it is not a dependency); `write_markdown_report` calls it automatically in that case.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline import plots
from pipeline.artifacts import RunDir, atomic_write_text, read_json
from pipeline.errors import PipelineError
from pipeline.metrics.summary import METRIC_DIRECTIONS
from pipeline.stages.base import STAGE_NAMES

log = logging.getLogger(__name__)

__all__ = ["FIGURES", "PLOTS_DIR", "REPORT_MD", "TENSORBOARD_DIR", "write_markdown_report", "write_tensorboard"]

REPORT_MD = "report.md"
PLOTS_DIR = "report_plots"
TENSORBOARD_DIR = "tensorboard"
STAGE_ORDER = STAGE_NAMES  # defined once, in pipeline.stages.base
# figure key -> PNG file name inside PLOTS_DIR
FIGURES = {
    "sparsity": "sparsity_over_steps.png",
    "thresholds": "thresholds_over_steps.png",
    "task_weights": "task_weights_over_steps.png",
    "layers": "layer_sparsity.png",
    "metrics": "metrics_vs_dense.png",
}
_VERDICT = {"ok": "passed", "skipped": "skipped", "failed": "**FAILED**"}


# -- formatting ----------------------------------------------------------------------------------------
def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.{digits}g}"
    if isinstance(v, (dict, list, tuple)):
        return "`" + json.dumps(v, default=str, separators=(",", ":")) + "`"
    return str(v)


def _cell(v: Any, digits: int = 4) -> str:
    """A table cell: formatted, pipes escaped, newlines folded."""
    return _fmt(v, digits).replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


def _flag(v: Any) -> str:
    """A pass/fail style value: a failure stands out."""
    return "**no**" if v is False else _cell(v)


_FLAG_KEYS = ("passed", "sparsity_survived", "metrics_agree", "agree", "ok")


def _pct(v: Any) -> str:
    return "–" if not isinstance(v, (int, float)) or isinstance(v, bool) else f"{v:+.2f}%"


def _bytes(v: Any) -> str:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return _fmt(v)
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(v) >= scale:
            return f"{v / scale:.2f} {unit} ({int(v)} B)"
    return f"{int(v)} B"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c if isinstance(c, str) else _cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


_LIST_HEAD = 4  # items shown of a long list inside a details block
_LIST_MAX = 8


def _compact(obj: Any, depth: int = 0) -> str:
    """JSON-like text: short containers on one line, long lists cut to their first items (the full data
    stays in the stage's own JSON file)."""
    one_line = json.dumps(obj, default=str, ensure_ascii=False)
    pad, inner = "  " * depth, "  " * (depth + 1)
    if _is_scalar(obj) or len(one_line) <= 100 - len(pad):
        return one_line
    if isinstance(obj, Mapping):
        items = [f"{inner}{json.dumps(str(k), ensure_ascii=False)}: {_compact(v, depth + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, (list, tuple)):
        shown = list(obj) if len(obj) <= _LIST_MAX else list(obj)[:_LIST_HEAD]
        items = [inner + _compact(v, depth + 1) for v in shown]
        if len(shown) < len(obj):
            items.append(f"{inner}... ({len(obj) - len(shown)} more)")
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return one_line


def _json_details(title: str, obj: Any) -> str:
    return f"<details><summary>{title}</summary>\n\n```\n{_compact(obj)}\n```\n\n</details>"


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def _mapping_section(
    d: Mapping[str, Any], first: Sequence[str] = (), fmt: Mapping[str, Callable[[Any], str]] | None = None,
    source: str | None = None,
) -> str:
    """Key/value table of the scalar entries (`first` keys first); nested entries with a `status` as one line
    each, other nested entries as collapsible JSON (`source`: the file that holds them in full)."""
    fmt = fmt or {}
    keys = [k for k in first if k in d] + [k for k in d if k not in first]
    rows = [
        [_cell(k), fmt[k](d[k]) if k in fmt else (_flag(d[k]) if k in _FLAG_KEYS else _cell(d[k]))]
        for k in keys if _is_scalar(d[k])
    ]
    out = [_table(["key", "value"], rows)] if rows else []
    nested = [k for k in keys if not _is_scalar(d[k])]
    for k in nested:
        v = d[k]
        if isinstance(v, Mapping) and "status" in v and all(x in ("status", "reason") for x in v):
            out.append(f"- `{k}`: {_fmt(v.get('status'))}" + (f" — {_fmt(v.get('reason'))}" if v.get("reason") else ""))
    details = [_json_details(str(k), d[k]) for k in nested
               if not (isinstance(d[k], Mapping) and "status" in d[k] and all(x in ("status", "reason") for x in d[k]))]
    if details and source:
        details.insert(0, f"Nested entries (long lists cut; in full in `{source}`):")
    out += details
    return "\n\n".join(out)


def _heads_table(heads: Mapping[str, Any]) -> str:
    """One row per head; scalar fields as columns (`passed`, `max_abs`, `mean_abs` first), columns that only
    repeat the head name or are empty everywhere dropped."""
    rows_in = {n: h for n, h in heads.items() if isinstance(h, Mapping)}
    preferred = ["passed", "max_abs", "mean_abs"]
    cols = list(dict.fromkeys(preferred + [k for h in rows_in.values() for k, x in h.items() if _is_scalar(x)]))

    def useful(c: str) -> bool:
        vals = [h.get(c) for h in rows_in.values()]
        if all(v in (None, "") for v in vals):
            return False
        return not all(v == n for n, v in zip(rows_in, vals, strict=True))  # e.g. "name": the head itself

    cols = [c for c in cols if useful(c)]
    rows = [[f"`{n}`"] + [_flag(h.get(c)) if c in _FLAG_KEYS else _cell(h.get(c), 3) for c in cols]
            for n, h in rows_in.items()]
    out = [_table(["head"] + cols, rows)]
    nested = {n: {k: x for k, x in h.items() if not _is_scalar(x)} for n, h in rows_in.items()}
    if any(nested.values()):
        out.append(_json_details("per-head details", {k: x for k, x in nested.items() if x}))
    return "\n\n".join(out)


def _parity_table(parity: Mapping[str, Any]) -> str:
    """Task metrics under both runtimes: `{task: {ref: {m: v}, test: {m: v}, delta?, passed?}}`."""
    rows = []
    for task, p in parity.items():
        if not isinstance(p, Mapping):
            continue
        ref, test, delta = p.get("ref") or {}, p.get("test") or {}, p.get("delta") or {}
        for m in dict.fromkeys(list(ref) + list(test)):
            rows.append([f"`{task}`", _cell(m), _cell(ref.get(m), 6), _cell(test.get(m), 6), _cell(delta.get(m), 3),
                         _flag(p.get("passed"))])
    return _table(["task", "metric", "torch", "onnxruntime", "abs. difference", "passed"], rows) if rows else ""


# -- inputs --------------------------------------------------------------------------------------------
def _read_optional(run: RunDir, *parts: str) -> tuple[Any, str | None]:
    """(data, None), (None, None) when the file does not exist, (None, note) when it is unreadable."""
    p = run.path(*parts)
    if not p.exists():
        return None, None
    try:
        return read_json(p), None
    except PipelineError as e:
        log.warning("report: %s", e)
        return None, f"{'/'.join(parts)} is unreadable ({e})"


def _stage_note(report: Mapping[str, Any], stage: str) -> str:
    """Why a stage's section is empty: not run / skipped / failed, with the recorded reason."""
    entry = (report.get("stages") or {}).get(stage) or {}
    status = entry.get("status")
    reason = entry.get("reason")
    if status is None:
        return f"_not run (stage `{stage}` has not run yet)_"
    if status == "ok":
        return f"_stage `{stage}` ran but left no data for this section_"
    return f"_{status}" + (f": {_fmt(reason)}" if reason else "") + "_"


def _status_word(report: Mapping[str, Any], stage: str) -> str:
    return ((report.get("stages") or {}).get(stage) or {}).get("status") or "not run"


class _Figures:
    """Draws figures into the plots folder; a failure becomes a note instead of an exception."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.made: set[str] = set()

    def draw(self, key: str, caption: str, fn: Callable[[Path], Any]) -> str:
        name = FIGURES[key]
        try:
            fn(self.folder / name)
        except Exception as e:  # a plot must never stop the pipeline
            log.warning("report plot %s unavailable: %s: %s", name, type(e).__name__, e)
            reason = f"{type(e).__name__}: {e}".replace("\n", " ").strip()
            reason = reason if len(reason) <= 300 else reason[:297] + "..."
            return f"_plot unavailable: {reason}_"
        self.made.add(name)
        return f"![{caption}]({PLOTS_DIR}/{name})"

    def remove_stale(self) -> None:
        """Drop figures of an earlier report that this one could not draw (they would be out of date)."""
        for name in FIGURES.values():
            p = self.folder / name
            if name not in self.made and p.exists():
                p.unlink()


# -- sections ------------------------------------------------------------------------------------------
def _header(run: RunDir, report: Mapping[str, Any]) -> str:
    lines = [f"# Run report: {run.root.name}", "", f"Run directory: `{report.get('run_dir') or run.root}`"]
    if run.config_path.exists():
        try:
            import yaml

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


def _verdicts(report: Mapping[str, Any]) -> str:
    stages = report.get("stages") or {}
    names = list(STAGE_ORDER) + [s for s in stages if s not in STAGE_ORDER]
    rows = []
    for name in names:
        e = stages.get(name) or {}
        status = e.get("status")
        secs = e.get("seconds")
        rows.append([
            f"`{name}`",
            _VERDICT.get(status, _cell(status)) if status else "not run",
            f"{secs:.1f}" if isinstance(secs, (int, float)) else "–",
            _cell(e.get("started_at")),
            _cell(e.get("reason")) if e.get("reason") else "",
        ])
    ran = [n for n in names if (stages.get(n) or {}).get("status")]
    failed = [n for n in ran if stages[n].get("status") == "failed"]
    summary = f"{sum(stages[n].get('status') == 'ok' for n in ran)} of {len(names)} stages passed"
    if failed:
        summary += "; failed: " + ", ".join(f"`{n}`" for n in failed)
    v = report.get("validation") or {}
    if "passed" in v:
        summary += f"; ONNX Runtime validation {'passed' if v['passed'] else '**FAILED**'}"
    b = report.get("build") or {}
    if b.get("status"):
        summary += f"; TensorRT build: {b['status']}"
    return "## Verdicts\n\n" + summary + ".\n\n" + _table(["stage", "verdict", "seconds", "started", "reason"], rows)


def _sparsity(
    report: Mapping[str, Any],
    train_sp: Mapping[str, Any] | None,
    hard_sp: Mapping[str, Any] | None,
    ts: Mapping[str, Any] | None,
    notes: list[str],
    figs: _Figures,
) -> str:
    out = ["## Sparsity"]
    out += [f"_{n}_" for n in notes]
    sp = report.get("sparsity")
    hardened = hard_sp is not None
    threshold_kind = (ts or {}).get("threshold_kind") or (train_sp or {}).get("threshold_kind")
    if not sp:
        out.append(_stage_note(report, "train"))
    else:
        target, overall = sp.get("target"), sp.get("overall")
        trained_overall = sp.get("trained_overall")
        lines = [
            f"- method: `{sp.get('method')}`, pattern: `{sp.get('pattern')}`"
            + ("" if hardened else f" (not hardened: harden stage {_status_word(report, 'harden')})"),
            f"- target {_fmt(target)}; overall {_fmt(overall, 6)} ({'hardened' if hardened else 'trained'})"
            + (f"; trained (soft) {_fmt(trained_overall, 6)}" if hardened and trained_overall is not None else ""),
        ]
        if isinstance(target, (int, float)) and isinstance(overall, (int, float)):
            lines.append(f"- overall − target: {overall - target:+.4f}")
        if train_sp:
            if train_sp.get("prunable_params") is not None:
                lines.append(
                    f"- prunable parameters {_fmt(train_sp.get('prunable_params'))}, left dense by rule "
                    f"{_fmt(train_sp.get('dense_params'))}; sparsity over all convs "
                    f"{_fmt(train_sp.get('overall_all_convs'))}"
                )
        if hard_sp:
            if hard_sp.get("pattern_counts"):
                lines.append(
                    "- layers per pattern: "
                    + ", ".join(f"{k} {_fmt(v)}" for k, v in hard_sp["pattern_counts"].items())
                )
            if hard_sp.get("bn_folded") is not None:
                lines.append(f"- batch norms folded: {len(hard_sp['bn_folded'] or [])}")
            if hard_sp.get("finetune"):
                lines.append(f"- 2:4 fine-tune: {_fmt(hard_sp['finetune'])}")
        out.append("\n".join(lines))

        trained_c = sp.get("trained_components") or (train_sp or {}).get("components") or {}
        hard_c = (hard_sp or {}).get("components") or (sp.get("components") if hardened else {}) or {}
        thr = sp.get("thresholds") or {}
        params = (train_sp or {}).get("component_params") or {}
        total = sum(v for v in params.values() if isinstance(v, (int, float))) or None
        comps = list(dict.fromkeys(list(trained_c) + list(hard_c) + list(thr)))
        if comps:
            thr_col = f"threshold ({threshold_kind})" if threshold_kind else "threshold"
            rows = [
                [
                    f"`{c}`",
                    _cell(params.get(c)),
                    f"{params[c] / total:.1%}" if total and isinstance(params.get(c), (int, float)) else "–",
                    _cell(trained_c.get(c)),
                    _cell(hard_c.get(c)) if hardened else "not run",
                    _cell(thr.get(c)),
                ]
                for c in comps
            ]
            out.append(
                _table(["component", "params", "share", "trained sparsity", "hardened sparsity", thr_col], rows)
            )

    points = (ts or {}).get("points") or []
    if points:
        out.append(figs.draw("sparsity", "sparsity over steps",
                             lambda p: plots.plot_sparsity_over_steps(points, p)))
        if any((pt.get("thresholds") or {}) for pt in points):
            out.append(figs.draw("thresholds", "thresholds over steps",
                                 lambda p: plots.plot_thresholds_over_steps(points, p, threshold_kind)))
        else:
            out.append(f"_no thresholds logged (threshold kind: {threshold_kind or 'none'})_")
    elif ts is None and (report.get("stages") or {}).get("train", {}).get("status") == "ok":
        out.append("_train/timeseries.json is missing: no sparsity-over-steps plots_")

    layers = (hard_sp or {}).get("layers") or (train_sp or {}).get("layers") or []
    if layers:
        trained_layers = {
            e["name"]: e.get("sparsity") for e in (train_sp or {}).get("layers") or [] if isinstance(e, dict) and "name" in e
        }
        target = (sp or {}).get("target")
        out.append(figs.draw(
            "layers", "per-layer sparsity",
            lambda p: plots.plot_layer_sparsity(layers, p, trained=trained_layers if hardened else None, target=target),
        ))
        out.append(_layer_details(layers, trained_layers, hardened))
    return "\n\n".join(out)


def _layer_details(layers: Sequence[Mapping[str, Any]], trained: Mapping[str, Any], hardened: bool) -> str:
    rows = []
    for e in layers:
        row = [f"`{e.get('name')}`", _cell(e.get("component") or "(dense by rule)"), _cell(e.get("shape")),
               _cell(trained.get(e.get("name"), e.get("sparsity") if not hardened else None))]
        if hardened:
            row += [_cell(e.get("pattern")), _cell(e.get("sparsity")), _cell(e.get("reason"))]
        rows.append(row)
    header = ["layer", "component", "shape", "trained sparsity"]
    if hardened:
        header += ["pattern", "hardened sparsity", "reason"]
    return (f"<details><summary>Per-layer table ({len(layers)} layers)</summary>\n\n"
            + _table(header, rows) + "\n\n</details>")


def _training(report: Mapping[str, Any], ts: Mapping[str, Any] | None, note: str | None, figs: _Figures) -> str:
    out = ["## Training: task weights and losses"]
    if note:
        out.append(f"_{note}_")
    points = (ts or {}).get("points") or []
    if not points:
        out.append(_stage_note(report, "train") if ts is None and not note else "_no timeseries points logged_")
        return "\n\n".join(out)
    first, last = points[0], points[-1]
    out.append(
        f"{len(points)} logged points, steps {_fmt(first.get('step'))}–{_fmt(last.get('step'))}; "
        f"final learning rate {_fmt(last.get('lr'))}."
    )
    tasks = list(dict.fromkeys(list(last.get("task_weights") or {}) + list(last.get("losses") or {})))
    if tasks:
        fw, fl = first.get("task_weights") or {}, first.get("losses") or {}
        lw, ll = last.get("task_weights") or {}, last.get("losses") or {}
        out.append(_table(
            ["task", "first weight", "final weight", "first loss", "final loss"],
            [[f"`{t}`", _cell(fw.get(t)), _cell(lw.get(t)), _cell(fl.get(t)), _cell(ll.get(t))] for t in tasks],
        ))
    out.append(figs.draw("task_weights", "task weights and losses over steps",
                         lambda p: plots.plot_task_weights_over_steps(points, p)))
    return "\n\n".join(out)


def _metric_names(task: str, *dicts: Mapping[str, Any] | None) -> list[str]:
    known = list(METRIC_DIRECTIONS.get(task, {}))
    present = dict.fromkeys(k for d in dicts if d for k in (d.get(task) or {}))
    return [k for k in known if k in present] + [k for k in present if k not in known]


def _metrics(report: Mapping[str, Any], figs: _Figures) -> str:
    out = ["## Metrics: pruned vs dense"]
    m = report.get("metrics")
    if not m:
        out.append(_stage_note(report, "train"))
        return "\n\n".join(out)
    pruned, trained, dense = m.get("pruned") or {}, m.get("trained") or {}, m.get("dense") or None
    hardened = (report.get("stages") or {}).get("harden", {}).get("status") == "ok"
    pruned_label = "pruned (hardened)" if hardened else "pruned (trained, not hardened)"
    show_trained = hardened and trained and trained != pruned
    if dense:
        out.append(f"Dense reference: `{report.get('dense_reference') or 'given'}`. Change is the signed relative "
                   "change vs dense in percent, positive = better (↑ higher is better, ↓ lower is better).")
    else:
        out.append("_no dense reference (set `dense_reference: auto` or a dense run directory in the config): "
                   "ΔT/Δp not computed_")
    change = plots.relative_change_pct(pruned, dense) if dense else {}
    change_tr = plots.relative_change_pct(trained, dense) if dense and show_trained else {}
    header = ["task", "metric", pruned_label] + (["trained (soft)"] if show_trained else [])
    header += (["dense", "change"] + (["change (trained)"] if show_trained else [])) if dense else []
    rows = []
    tasks = list(dict.fromkeys(list(pruned) + list(trained if show_trained else {}) + list(dense or {})))
    for t in tasks:
        for k in _metric_names(t, pruned, trained if show_trained else None, dense):
            sign = METRIC_DIRECTIONS.get(t, {}).get(k)
            arrow = "↑" if sign == 1 else ("↓" if sign == -1 else "")
            row = [f"`{t}`", f"{k} {arrow}".strip(), _cell((pruned.get(t) or {}).get(k))]
            if show_trained:
                row.append(_cell((trained.get(t) or {}).get(k)))
            if dense:
                row += [_cell((dense.get(t) or {}).get(k)), _pct(change.get(t, {}).get(k))]
                if show_trained:
                    row.append(_pct(change_tr.get(t, {}).get(k)))
            rows.append(row)
    if rows:
        out.append(_table(header, rows))
    if report.get("delta_t") is not None or report.get("delta_p") is not None:
        out.append(f"**ΔT = {_pct(report.get('delta_t'))}**, Δp = {_pct(report.get('delta_p'))} "
                   "(ΔT: per task the sum over its metrics, Δp: the mean; overall the mean over tasks).")
        dt, dp = report.get("delta_t_per_task") or {}, report.get("delta_p_per_task") or {}
        if dt or dp:
            out.append(_table(["task", "ΔT", "Δp"],
                              [[f"`{t}`", _pct(dt.get(t)), _pct(dp.get(t))] for t in dict.fromkeys(list(dt) + list(dp))]))
    if dense:
        models = {pruned_label: pruned} | ({"trained (soft)": trained} if show_trained else {})
        out.append(figs.draw("metrics", "metrics vs dense",
                             lambda p: plots.plot_metrics_vs_dense(models, dense, p)))
    return "\n\n".join(out)


def _export(report: Mapping[str, Any]) -> str:
    out = ["## Export (ONNX)"]
    ex = report.get("export")
    if not isinstance(ex, Mapping) or not ex:
        out.append(_stage_note(report, "export"))
        return "\n\n".join(out)
    raw, packed = ex.get("size_bytes"), ex.get("compressed_bytes")
    if all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in (raw, packed)) and packed:
        out.append(f"Zero pattern survived export: {_flag(ex.get('sparsity_survived'))}. "
                   f"The compressed file is {raw / packed:.2f}× smaller than the ONNX file.")
    elif "sparsity_survived" in ex:
        out.append(f"Zero pattern survived export: {_flag(ex.get('sparsity_survived'))}.")
    fmt = {"size_bytes": _bytes, "compressed_bytes": _bytes}
    first = ["onnx", "compressed", "opset", "exporter", "size_bytes", "compressed_bytes", "sparsity_survived"]
    out.append(_mapping_section(ex, first, fmt, source="export/checks.json"))
    return "\n\n".join(out)


def _validation(report: Mapping[str, Any]) -> str:
    out = ["## Validation (ONNX Runtime vs PyTorch)"]
    v = report.get("validation")
    if not isinstance(v, Mapping) or not v:
        out.append(_stage_note(report, "validate"))
        return "\n\n".join(out)
    if "passed" in v:
        out.append(f"Verdict: **{'PASSED' if v['passed'] else 'FAILED'}**.")
    rest = {k: val for k, val in v.items() if k not in ("passed", "heads", "metrics_agree", "real_data", "parity")}
    heads = v.get("heads")
    if isinstance(heads, Mapping) and heads:
        out.append("Held-out samples, per head:")
        out.append(_heads_table(heads))
    elif heads is not None:
        rest["heads"] = heads
    agree = v.get("metrics_agree")
    if isinstance(agree, Mapping):
        out.append("Task metrics agree:")
        out.append(_mapping_section(agree))
    elif "metrics_agree" in v:
        out.append(f"Task metrics agree: {_flag(agree)}.")
    if isinstance(v.get("parity"), Mapping) and v["parity"]:
        out.append(_parity_table(v["parity"]))
    real = v.get("real_data")
    if isinstance(real, Mapping) and real:
        out.append("### Real data")
        head = [f"source `{real['source']}`" if real.get("source") else None,
                f"{real['samples']} samples" if real.get("samples") is not None else None,
                f"passed: {_flag(real['passed'])}" if "passed" in real else None]
        out.append(", ".join(x for x in head if x) + ".")
        if isinstance(real.get("heads"), Mapping) and real["heads"]:
            out.append(_heads_table(real["heads"]))
        if isinstance(real.get("parity"), Mapping) and real["parity"]:
            out.append(_parity_table(real["parity"]))
        extra = {k: x for k, x in real.items() if k not in ("source", "samples", "passed", "heads", "parity")}
        if extra:
            out.append(_mapping_section(extra, source="validate/report.json"))
    elif "real_data" in v:
        out.append("Real data: not checked (no real sample configured or found).")
    if rest:
        out.append(_mapping_section(rest, source="validate/report.json"))
    return "\n\n".join(out)


def _build(report: Mapping[str, Any]) -> str:
    out = ["## Build (TensorRT)"]
    b = report.get("build")
    if not isinstance(b, Mapping) or not b:
        out.append(_stage_note(report, "build"))
        return "\n\n".join(out)
    status = b.get("status")
    if status in (None, "not run") and not (report.get("stages") or {}).get("build"):
        out.append(_stage_note(report, "build"))
        return "\n\n".join(out)
    out.append(f"Status: **{_fmt(status)}**" + (f" — {_fmt(b.get('reason'))}" if b.get("reason") else "") + ".")
    rest = {k: v for k, v in b.items() if k not in ("status", "reason")}
    if rest:
        out.append(_mapping_section(rest, ["sparse_speedup", "note"], source="build/report.json"))
    return "\n\n".join(out)


# -- entry points --------------------------------------------------------------------------------------
def write_markdown_report(run: RunDir, report: dict[str, Any]) -> Path:
    """Write `<run>/report.md` and its figures in `<run>/report_plots/`; return the Markdown path."""
    ts, ts_note = _read_optional(run, "train", "timeseries.json")
    train_sp, train_note = _read_optional(run, "train", "sparsity.json")
    hard_sp, hard_note = _read_optional(run, "harden", "sparsity.json")
    figs = _Figures(run.path(PLOTS_DIR))
    sections = [
        _header(run, report),
        _verdicts(report),
        _sparsity(report, train_sp, hard_sp, ts, [n for n in (train_note, hard_note) if n], figs),
        _training(report, ts, ts_note, figs),
        _metrics(report, figs),
        _export(report),
        _validation(report),
        _build(report),
    ]
    tb = None
    if importlib.util.find_spec("tensorboard") is not None:
        try:
            tb = write_tensorboard(run, report)
        except Exception as e:  # optional extra; never stops the pipeline
            log.warning("TensorBoard scalars not written: %s: %s", type(e).__name__, e)
    if tb is not None:
        sections.append(f"TensorBoard scalars: `tensorboard --logdir {tb}`")
    figs.remove_stale()
    path = run.path(REPORT_MD)
    atomic_write_text(path, "\n\n".join(s for s in sections if s).rstrip() + "\n")
    return path


def write_tensorboard(run: RunDir, report: Mapping[str, Any] | None = None) -> Path | None:
    """Write the timeseries (sparsity, thresholds, task weights, losses, lr) and final metrics as TensorBoard
    scalars into `<run>/tensorboard/` (replaced on every call). Returns None when `tensorboard` is not
    installed or there is no timeseries."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    ts, _ = _read_optional(run, "train", "timeseries.json")
    points = (ts or {}).get("points") or []
    if not points:
        return None
    out = run.path(TENSORBOARD_DIR)
    if out.exists():
        shutil.rmtree(out)
    writer = SummaryWriter(log_dir=str(out))
    try:
        last = 0
        for i, p in enumerate(points):
            step = int(p.get("step", i))
            last = max(last, step)
            sp = p.get("sparsity") or {}
            scalars = {"sparsity/overall": sp.get("overall"), "sparsity/target": sp.get("target"), "lr": p.get("lr")}
            scalars |= {f"sparsity/{c}": v for c, v in (sp.get("components") or {}).items()}
            scalars |= {f"threshold/{c}": v for c, v in (p.get("thresholds") or {}).items()}
            scalars |= {f"task_weight/{t}": v for t, v in (p.get("task_weights") or {}).items()}
            scalars |= {f"loss/{t}": v for t, v in (p.get("losses") or {}).items()}
            for tag, v in scalars.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    writer.add_scalar(tag, float(v), step)
        m = (report or {}).get("metrics") or {}
        for label in ("pruned", "dense"):
            for task, values in (m.get(label) or {}).items():
                for k, v in (values or {}).items():
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        writer.add_scalar(f"metrics_{label}/{task}.{k}", float(v), last)
        for key in ("delta_t", "delta_p"):
            v = (report or {}).get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                writer.add_scalar(f"summary/{key}", float(v), last)
    finally:
        writer.close()
    return out
