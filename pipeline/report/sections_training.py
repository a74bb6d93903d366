"""`report.md` sections about training: sparsity (targets, components, per-layer), task weights and losses,
and metrics against the dense reference."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.metrics.summary import known_directions
from pipeline.report import plots
from pipeline.report.markdown_format import (
    Figures,
    cell,
    fmt_pct,
    fmt_value,
    stage_note,
    status_word,
    table,
)


def same_shown(a: Any, b: Any, digits: int = 4) -> bool:
    """True when two values (or nested dicts of them) print the same at `digits` significant digits: a
    column or bar that would only repeat another is noise."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return set(a) == set(b) and all(same_shown(a[k], b[k], digits) for k in a)
    return fmt_value(a, digits) == fmt_value(b, digits)


def sparsity_section(
    report: Mapping[str, Any],
    train_sp: Mapping[str, Any] | None,
    hard_sp: Mapping[str, Any] | None,
    ts: Mapping[str, Any] | None,
    notes: list[str],
    figs: Figures,
) -> str:
    out = ["## Sparsity"]
    out += [f"_{n}_" for n in notes]
    sp = report.get("sparsity")
    hardened = hard_sp is not None
    threshold_kind = (ts or {}).get("threshold_kind") or (train_sp or {}).get("threshold_kind")
    if not sp:
        out.append(stage_note(report, "train"))
    else:
        out.append(_sparsity_lines(report, sp, train_sp, hard_sp))
        components = _component_table(sp, train_sp, hard_sp, threshold_kind)
        if components:
            out.append(components)
    out += _sparsity_plots(report, ts, threshold_kind, figs)
    layers = (hard_sp or {}).get("layers") or (train_sp or {}).get("layers") or []
    if layers:
        trained_layers = {
            e["name"]: e.get("sparsity") for e in (train_sp or {}).get("layers") or [] if isinstance(e, dict) and "name" in e
        }
        target = (sp or {}).get("target")
        hard_layers = {e["name"]: e.get("sparsity") for e in layers if isinstance(e, dict) and "name" in e}
        # the trained overlay and column only when hardening changed a layer
        show_trained = hardened and not same_shown(trained_layers, hard_layers)
        out.append(figs.draw(
            "layers", "per-layer sparsity",
            lambda p: plots.plot_layer_sparsity(layers, p, trained=trained_layers if show_trained else None,
                                                target=target),
        ))
        out.append(_layer_details(layers, trained_layers, hardened, show_trained))
    return "\n\n".join(out)


def _sparsity_lines(
    report: Mapping[str, Any], sp: Mapping[str, Any], train_sp: Mapping[str, Any] | None,
    hard_sp: Mapping[str, Any] | None,
) -> str:
    """The bullet list under the Sparsity heading: method, target vs reached, parameter counts, hardening."""
    hardened = hard_sp is not None
    target, overall = sp.get("target"), sp.get("overall")
    trained_overall = sp.get("trained_overall")
    channel = sp.get("structure") == "channel"  # the target and `overall` are MAC fractions removed
    lines = [
        f"- method: `{sp.get('method')}`, " + ("structure: `channel` (whole filters removed)" if channel
                                               else f"pattern: `{sp.get('pattern')}`")
        + ("" if hardened else f" (not hardened: harden stage {status_word(report, 'harden')})"),
        f"- target {fmt_value(target)}{' (MAC fraction)' if channel else ''}; "
        f"{'MACs removed' if channel else 'overall'} {fmt_value(overall, 6)} ({'hardened' if hardened else 'trained'})"
        + (f"; trained (soft) {fmt_value(trained_overall, 6)}"
           if hardened and trained_overall is not None and not same_shown(trained_overall, overall, 6) else ""),
    ]
    if isinstance(target, (int, float)) and isinstance(overall, (int, float)):
        lines.append(f"- {'MACs removed' if channel else 'overall'} − target: {overall - target:+.4f}")
    if channel:
        lines.append(f"- parameters removed (prunable convs): {fmt_value(sp.get('param_sparsity'), 6)}; MACs kept "
                     f"{fmt_value(sp.get('macs_kept'))} of {fmt_value(sp.get('macs_dense'))}")
    if train_sp:
        if train_sp.get("prunable_params") is not None:
            lines.append(
                f"- prunable parameters {fmt_value(train_sp.get('prunable_params'))}, left dense by rule "
                f"{fmt_value(train_sp.get('dense_params'))}; sparsity over all convs "
                f"{fmt_value(train_sp.get('overall_all_convs'))}"
            )
    if hard_sp:
        if hard_sp.get("pattern_counts"):
            lines.append(
                "- layers per pattern: "
                + ", ".join(f"{k} {fmt_value(v)}" for k, v in hard_sp["pattern_counts"].items())
            )
        if hard_sp.get("bn_folded") is not None:
            lines.append(f"- batch norms folded: {len(hard_sp['bn_folded'] or [])}")
        if hard_sp.get("finetune"):
            lines.append(f"- 2:4 fine-tune: {fmt_value(hard_sp['finetune'])}")
    return "\n".join(lines)


def _component_table(
    sp: Mapping[str, Any], train_sp: Mapping[str, Any] | None, hard_sp: Mapping[str, Any] | None,
    threshold_kind: str | None,
) -> str:
    """Per-component parameters, trained and hardened sparsity and threshold; "" when there are none."""
    hardened = hard_sp is not None
    trained_c = sp.get("trained_components") or (train_sp or {}).get("components") or {}
    hard_c = (hard_sp or {}).get("components") or (sp.get("components") if hardened else {}) or {}
    thr = sp.get("thresholds") or {}
    params = (train_sp or {}).get("component_params") or {}
    total = sum(v for v in params.values() if isinstance(v, (int, float))) or None
    comps = list(dict.fromkeys(list(trained_c) + list(hard_c) + list(thr)))
    if not comps:
        return ""
    thr_col = f"threshold ({threshold_kind})" if threshold_kind else "threshold"
    merged = hardened and same_shown(trained_c, hard_c)  # one column when hardening changed nothing shown
    rows = [
        [
            f"`{c}`",
            cell(params.get(c)),
            f"{params[c] / total:.1%}" if total and isinstance(params.get(c), (int, float)) else "–",
            cell(trained_c.get(c)),
        ]
        + ([] if merged else [cell(hard_c.get(c)) if hardened else "not run"])
        + [cell(thr.get(c))]
        for c in comps
    ]
    sp_cols = ["sparsity (trained = hardened)"] if merged else ["trained sparsity", "hardened sparsity"]
    return table(["component", "params", "share", *sp_cols, thr_col], rows)


def _sparsity_plots(
    report: Mapping[str, Any], ts: Mapping[str, Any] | None, threshold_kind: str | None, figs: Figures,
) -> list[str]:
    points = (ts or {}).get("points") or []
    if points:
        out = [figs.draw("sparsity", "sparsity over steps", lambda p: plots.plot_sparsity_over_steps(points, p))]
        if any((pt.get("thresholds") or {}) for pt in points):
            out.append(figs.draw("thresholds", "thresholds over steps",
                                 lambda p: plots.plot_thresholds_over_steps(points, p, threshold_kind)))
        else:
            out.append(f"_no thresholds logged (threshold kind: {threshold_kind or 'none'})_")
        return out
    if ts is None and (report.get("stages") or {}).get("train", {}).get("status") == "ok":
        return ["_train/timeseries.json is missing: no sparsity-over-steps plots_"]
    return []


def _layer_details(
    layers: Sequence[Mapping[str, Any]], trained: Mapping[str, Any], hardened: bool, show_trained: bool,
) -> str:
    rows = []
    for e in layers:
        row = [f"`{e.get('name')}`", cell(e.get("component") or "(dense by rule)"), cell(e.get("shape"))]
        if show_trained or not hardened:
            row.append(cell(trained.get(e.get("name"), e.get("sparsity") if not hardened else None)))
        if hardened:
            row += [cell(e.get("pattern")), cell(e.get("sparsity")), cell(e.get("reason"))]
        rows.append(row)
    header = ["layer", "component", "shape"] + (["trained sparsity"] if show_trained or not hardened else [])
    if hardened:
        header += ["pattern", "hardened sparsity" if show_trained else "sparsity (trained = hardened)", "reason"]
    return (f"<details><summary>Per-layer table ({len(layers)} layers)</summary>\n\n"
            + table(header, rows) + "\n\n</details>")


def training_section(report: Mapping[str, Any], ts: Mapping[str, Any] | None, note: str | None, figs: Figures) -> str:
    out = ["## Training: task weights and losses"]
    if note:
        out.append(f"_{note}_")
    points = (ts or {}).get("points") or []
    if not points:
        out.append(stage_note(report, "train") if ts is None and not note else "_no timeseries points logged_")
        return "\n\n".join(out)
    first, last = points[0], points[-1]
    out.append(
        f"{len(points)} logged points, steps {fmt_value(first.get('step'))}–{fmt_value(last.get('step'))}; "
        f"final learning rate {fmt_value(last.get('lr'))}."
    )
    tasks = list(dict.fromkeys(list(last.get("task_weights") or {}) + list(last.get("losses") or {})))
    if tasks:
        fw, fl = first.get("task_weights") or {}, first.get("losses") or {}
        lw, ll = last.get("task_weights") or {}, last.get("losses") or {}
        out.append(table(
            ["task", "first weight", "final weight", "first loss", "final loss"],
            [[f"`{t}`", cell(fw.get(t)), cell(lw.get(t)), cell(fl.get(t)), cell(ll.get(t))] for t in tasks],
        ))
    out.append(figs.draw("task_weights", "task weights and losses over steps",
                         lambda p: plots.plot_task_weights_over_steps(points, p)))
    return "\n\n".join(out)


def _metric_names(task: str, *dicts: Mapping[str, Any] | None) -> list[str]:
    present = dict.fromkeys(k for d in dicts if d for k in (d.get(task) or {}))
    known = list(known_directions(task, present))
    return [k for k in known if k in present] + [k for k in present if k not in known]


def metrics_section(report: Mapping[str, Any], figs: Figures) -> str:
    out = ["## Metrics: pruned vs dense"]
    m = report.get("metrics")
    if not m:
        out.append(stage_note(report, "train"))
        return "\n\n".join(out)
    pruned, trained, dense = m.get("pruned") or {}, m.get("trained") or {}, m.get("dense") or None
    hardened = (report.get("stages") or {}).get("harden", {}).get("status") == "ok"
    pruned_label = "pruned (hardened)" if hardened else "pruned (trained, not hardened)"
    show_trained = bool(hardened and trained and not same_shown(trained, pruned))
    const = m.get("constant_predictor") or {}
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
    header += ["constant predictor"] if const else []
    rows = []
    tasks = list(dict.fromkeys(list(pruned) + list(trained if show_trained else {}) + list(dense or {})))
    for t in tasks:
        for k in _metric_names(t, pruned, trained if show_trained else None, dense):
            sign = known_directions(t, pruned.get(t) or (dense or {}).get(t)).get(k)
            arrow = "↑" if sign == 1 else ("↓" if sign == -1 else "")
            row = [f"`{t}`", f"{k} {arrow}".strip(), cell((pruned.get(t) or {}).get(k))]
            if show_trained:
                row.append(cell((trained.get(t) or {}).get(k)))
            if dense:
                row += [cell((dense.get(t) or {}).get(k)), fmt_pct(change.get(t, {}).get(k))]
                if show_trained:
                    row.append(fmt_pct(change_tr.get(t, {}).get(k)))
            if const:
                row.append(cell((const.get(t) or {}).get(k)))
            rows.append(row)
    if rows:
        out.append(table(header, rows))
        notes = (["the trained (soft) model scores the same to 4 digits, so it is not repeated"]
                 if hardened and trained and not show_trained else [])
        notes += ["constant predictor: the best constant output on the same split, the floor a model must clear"] if const else []
        out += [f"_{n}._" for n in notes]
    if report.get("delta_t") is not None or report.get("delta_p") is not None:
        noise = report.get("delta_t_noise")
        band = (f" (dense seed-to-seed spread ±{noise:.2f} points: a ΔT inside it is noise)"
                if isinstance(noise, (int, float)) else "")
        out.append(f"**ΔT = {fmt_pct(report.get('delta_t'))}**{band}, Δp = {fmt_pct(report.get('delta_p'))} "
                   "(ΔT: per task the sum over its metrics, Δp: the mean; overall the mean over tasks).")
        dt, dp = report.get("delta_t_per_task") or {}, report.get("delta_p_per_task") or {}
        if dt or dp:
            out.append(table(["task", "ΔT", "Δp"],
                              [[f"`{t}`", fmt_pct(dt.get(t)), fmt_pct(dp.get(t))] for t in dict.fromkeys(list(dt) + list(dp))]))
    if dense:
        models = {pruned_label: pruned} | ({"trained (soft)": trained} if show_trained else {})
        out.append(figs.draw("metrics", "metrics vs dense",
                             lambda p: plots.plot_metrics_vs_dense(models, dense, p)))
    return "\n\n".join(out)
