"""PNG figures for the run report: one function per figure, plain data in, one PNG out.

Every function takes dicts/lists as read from the run directory (no torch, no RunDir), draws with the Agg
canvas, and writes the PNG atomically (a temp file in the same folder, then `os.replace`), so a reader never
sees half a PNG. matplotlib is imported inside the functions (docs/architecture.md). Figures are built with
`matplotlib.figure.Figure` + the Agg canvas rather than `pyplot`: that renders headless without switching
the process-wide backend (a notebook that calls the report keeps its own) and leaves no figure registered
in pyplot to leak; each figure is still cleared once written.

Functions raise `ValueError` when the data cannot make the figure (e.g. no points); the Markdown report
catches that per figure.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.artifacts import atomic_write_bytes

__all__ = [
    "PATTERN_STYLE",
    "plot_layer_sparsity",
    "plot_metrics_vs_dense",
    "plot_sparsity_over_steps",
    "plot_task_weights_over_steps",
    "plot_thresholds_over_steps",
    "relative_change_pct",
]

DPI = 110
# pattern -> (hatch, alpha, edge colour) for per-layer bars.
PATTERN_STYLE: dict[str, tuple[str, float, str]] = {
    "unstructured": ("", 0.95, "none"),
    "2:4": ("xxxx", 0.95, "black"),
    "dense": ("....", 0.35, "dimgray"),
}
_NO_COMPONENT = "(dense by rule)"
TRACK_TOL = 0.01  # overall sparsity within this of the target everywhere: one line says both


# -- plumbing ------------------------------------------------------------------------------------------
def _new_figure(width: float, height: float, nrows: int = 1, sharex: bool = False):
    """A Figure on an Agg canvas (no pyplot, no global backend change) and its axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, 1, sharex=sharex, squeeze=False)[:, 0]
    return fig, list(axes)


def _save(fig: Any, path: Path) -> Path:
    """Render to PNG in memory, write it atomically, release the figure."""
    path = Path(path)
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=DPI)
    finally:
        fig.clear()
    atomic_write_bytes(path, buf.getvalue())
    return path


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


# Components and tasks share names (a head's component is its task), so every figure colours a name alike.
_FIXED = ("backbone", "seg", "depth", "normal")


def _palette(names: Sequence[str]) -> dict[str, Any]:
    """Stable colours: backbone/seg/depth/normal keep tab10 slots 0-3 in every figure, others follow."""
    names = list(dict.fromkeys(names))
    others = [n for n in names if n not in _FIXED]
    if len(others) + len(_FIXED) <= 10:
        cols = _colors(10)
        slot = {n: i for i, n in enumerate(_FIXED)} | {n: len(_FIXED) + i for i, n in enumerate(others)}
        return {n: cols[slot[n]] for n in names}
    return dict(zip(names, _colors(len(names)), strict=True))


def _num(v: Any) -> float:
    """A float, or NaN for None / non-numbers (points may lack a key)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f


def _keys(points: Sequence[Mapping[str, Any]], field: str, sub: str | None = None) -> list[str]:
    """Union of the keys of `point[field]` (or `point[field][sub]`) in first-seen order."""
    seen: dict[str, None] = {}
    for p in points:
        d = p.get(field) or {}
        if sub is not None:
            d = d.get(sub) or {} if isinstance(d, Mapping) else {}
        if isinstance(d, Mapping):
            seen.update(dict.fromkeys(d))
    return list(seen)


def _series(points: Sequence[Mapping[str, Any]], field: str, key: str, sub: str | None = None) -> list[float]:
    out = []
    for p in points:
        d = p.get(field) or {}
        if sub is not None:
            d = d.get(sub) or {} if isinstance(d, Mapping) else {}
        out.append(_num(d.get(key)) if isinstance(d, Mapping) else math.nan)
    return out


def _steps(points: Sequence[Mapping[str, Any]]) -> list[float]:
    if not points:
        raise ValueError("no timeseries points")
    return [_num(p.get("step", i)) for i, p in enumerate(points)]


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def _legend(ax: Any, n: int, **kw: Any) -> None:
    if n == 0:
        return
    ax.legend(fontsize=8 if n <= 8 else 6, ncol=1 if n <= 8 else 2, **kw)


# -- (a) sparsity over steps ---------------------------------------------------------------------------
def plot_sparsity_over_steps(points: Sequence[Mapping[str, Any]], path: Path, title: str | None = None) -> Path:
    """Overall and per-component sparsity over training steps, with the target schedule dashed.

    Args:
        points: `timeseries.json["points"]`; each with `step` and `sparsity: {target, overall, components}`.
        path: PNG to write.
    """
    steps = _steps(points)
    comps = _keys(points, "sparsity", "components")
    fig, (ax,) = _new_figure(7.5, 4.2)
    palette = _palette(comps)
    for c in comps:
        ax.plot(steps, _series(points, "sparsity", c, "components"), color=palette[c], lw=1.4, label=c)
    overall = _series(points, "sparsity", "overall")
    target = _series(points, "sparsity", "target")
    if not _finite(overall) and not _finite(target):
        fig.clear()
        raise ValueError("the timeseries has no sparsity values")
    gaps = [abs(o - t) for o, t in zip(overall, target, strict=True) if math.isfinite(o) and math.isfinite(t)]
    tracks = bool(gaps) and max(gaps) <= TRACK_TOL  # the overall curve would hide the schedule line
    label = f"overall (= target schedule within {max(gaps):.3f})" if tracks else "overall"
    ax.plot(steps, overall, color="black", lw=2.4, label=label)
    if _finite(target) and not tracks:
        ax.plot(steps, target, color="black", lw=1.4, ls="--", label="target schedule")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("step")
    ax.set_ylabel("sparsity (fraction of zero weights)")
    ax.set_title(title or "Sparsity over training")
    ax.grid(alpha=0.3)
    _legend(ax, len(comps) + 2, loc="lower right")
    return _save(fig, path)


# -- (b) thresholds over steps -------------------------------------------------------------------------
def plot_thresholds_over_steps(
    points: Sequence[Mapping[str, Any]], path: Path, threshold_kind: str | None = None
) -> Path:
    """Per-component thresholds over steps, on a linear axis (a log axis spent its decades on the tiny
    starting value).

    Args:
        points: timeseries points with `thresholds: {component: value}`.
        threshold_kind: what the values mean (`timeseries.json["threshold_kind"]`), the y axis label.

    Raises:
        ValueError: no point carries a threshold (the method has none, e.g. dense or uniform magnitude).
    """
    steps = _steps(points)
    comps = _keys(points, "thresholds")
    series = {c: _series(points, "thresholds", c) for c in comps}
    values = [v for s in series.values() for v in _finite(s)]
    if not values:
        raise ValueError(f"the method logs no thresholds (threshold kind: {threshold_kind or 'none'})")
    fig, (ax,) = _new_figure(7.5, 4.2)
    palette = _palette(list(series))
    for c, s in series.items():
        ax.plot(steps, s, color=palette[c], lw=1.5, label=c, marker="." if len(steps) <= 30 else None)
    ax.set_xlabel("step")
    ax.set_ylabel(f"threshold: {threshold_kind}" if threshold_kind else "threshold")
    ax.set_title("Thresholds per component over training")
    ax.grid(alpha=0.3, which="both")
    _legend(ax, len(series), loc="best")
    return _save(fig, path)


# -- (c) task weights and losses -----------------------------------------------------------------------
def plot_task_weights_over_steps(points: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Adaptive task weights over steps (top) and per-task training losses (bottom, log y when positive)."""
    steps = _steps(points)
    tasks = _keys(points, "task_weights")
    loss_tasks = _keys(points, "losses")
    if not tasks and not loss_tasks:
        raise ValueError("the timeseries has neither task weights nor losses")
    colors = _palette(tasks + loss_tasks)
    fig, (ax_w, ax_l) = _new_figure(7.5, 6.0, nrows=2, sharex=True)
    for t in tasks:
        ax_w.plot(steps, _series(points, "task_weights", t), color=colors[t], lw=1.6, label=t)
    ax_w.set_ylabel("task weight")
    ax_w.set_title("Task weights over training")
    ax_w.grid(alpha=0.3)
    _legend(ax_w, len(tasks), loc="best")
    losses = {t: _series(points, "losses", t) for t in loss_tasks}
    for t, s in losses.items():
        ax_l.plot(steps, s, color=colors[t], lw=1.3, label=t)
    vals = [v for s in losses.values() for v in _finite(s)]
    if vals and all(v > 0 for v in vals):
        ax_l.set_yscale("log")
    ax_l.set_ylabel("training loss")
    ax_l.set_xlabel("step")
    ax_l.set_title("Per-task loss")
    ax_l.grid(alpha=0.3, which="both")
    _legend(ax_l, len(loss_tasks), loc="best")
    return _save(fig, path)


# -- (d) per-layer sparsity ----------------------------------------------------------------------------
def plot_layer_sparsity(
    layers: Sequence[Mapping[str, Any]],
    path: Path,
    trained: Mapping[str, float] | None = None,
    target: float | None = None,
) -> Path:
    """Horizontal bars of per-layer sparsity, coloured by component, hatched by pattern.

    Args:
        layers: `[{name, component, sparsity, pattern?}]` in model order (harden/sparsity.json layers, or
            train/sparsity.json layers, which have no pattern: drawn as unstructured, or dense when the
            layer has no component).
        trained: optional layer name -> learned (soft) sparsity, drawn as a black tick on each bar.
        target: optional overall target, a dotted vertical line.
    """
    if not layers:
        raise ValueError("no layers")
    n = len(layers)
    names = [str(e.get("name", f"#{i}")) for i, e in enumerate(layers)]
    comps = list(dict.fromkeys(e.get("component") or _NO_COMPONENT for e in layers))
    if _NO_COMPONENT in comps:  # grey, listed last
        comps = [c for c in comps if c != _NO_COMPONENT] + [_NO_COMPONENT]
    palette = _palette([c for c in comps if c != _NO_COMPONENT]) | {_NO_COMPONENT: (0.6, 0.6, 0.6, 1.0)}
    patterns = [str(e.get("pattern") or ("unstructured" if e.get("component") else "dense")) for e in layers]
    font = 7 if n <= 60 else (6 if n <= 110 else 5)
    fig, (ax,) = _new_figure(8.5, max(3.0, 1.6 + 0.145 * n))
    ys = list(range(n))
    for y, e, pat in zip(ys, layers, patterns, strict=True):
        hatch, alpha, edge = PATTERN_STYLE.get(pat, ("////", 0.9, "red"))
        value = _num(e.get("sparsity"))
        ax.barh(
            y, value, height=0.78, color=palette[e.get("component") or _NO_COMPONENT],
            alpha=alpha, hatch=hatch, edgecolor=edge, linewidth=0.6,
        )
        if not (value > 0.01):  # an empty bar would be invisible: say what it is
            ax.text(0.005, y, pat if math.isfinite(value) else "n/a", fontsize=font, va="center", color="dimgray")
    if trained:
        ty = [y for y, nm in zip(ys, names, strict=True) if nm in trained]
        tx = [_num(trained[nm]) for nm in names if nm in trained]
        if ty:
            ax.scatter(tx, ty, marker="|", s=60, color="black", linewidths=1.4, zorder=3)
    if target is not None and math.isfinite(_num(target)):
        ax.axvline(_num(target), color="black", ls=":", lw=1.0)
    ax.set_yticks(ys)
    ax.set_yticklabels(names, fontsize=font)
    ax.invert_yaxis()  # model order top to bottom
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_xlim(0, 1.0)
    ax.set_xlabel("sparsity (fraction of zero weights)")
    ax.set_title(f"Per-layer sparsity ({n} layers)")
    ax.grid(axis="x", alpha=0.3)

    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles: list[Any] = [Patch(facecolor=palette[c], label=c) for c in comps]
    for pat in dict.fromkeys(patterns):
        hatch, alpha, edge = PATTERN_STYLE.get(pat, ("////", 0.9, "red"))
        handles.append(Patch(facecolor="white", hatch=hatch, edgecolor=edge if edge != "none" else "gray",
                             label=f"pattern: {pat}"))
    if trained:
        handles.append(Line2D([], [], marker="|", ls="", color="black", markersize=9, label="learned (before harden)"))
    if target is not None:
        handles.append(Line2D([], [], ls=":", color="black", label="overall target"))
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return _save(fig, path)


# -- (e) metrics vs dense ------------------------------------------------------------------------------
def relative_change_pct(
    metrics: Mapping[str, Mapping[str, Any]], dense: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, float]]:
    """Signed relative change in percent (positive = better) for every known metric present in both.

    Unlike `pipeline.metrics.summary.relative_changes` this never raises: metrics missing on either side,
    unknown directions and zero/non-finite baselines are left out (a report draws what it can).
    """
    from pipeline.metrics.summary import known_directions

    out: dict[str, dict[str, float]] = {}
    for task, values in (metrics or {}).items():
        base_t = (dense or {}).get(task) or {}
        for name, sign in known_directions(task, values).items():
            m, b = _num((values or {}).get(name)), _num(base_t.get(name))
            if math.isfinite(m) and math.isfinite(b) and b != 0:
                out.setdefault(task, {})[name] = sign * (m - b) / b * 100.0
    return out


def plot_metrics_vs_dense(
    models: Mapping[str, Mapping[str, Mapping[str, Any]]],
    dense: Mapping[str, Mapping[str, Any]],
    path: Path,
) -> Path:
    """Grouped bars: per task metric, the signed relative change vs dense (percent, positive = better).

    Args:
        models: label -> task -> metric -> value, e.g. {"pruned": ..., "trained": ...}; one bar per label.
        dense: the dense baseline, task -> metric -> value.

    Raises:
        ValueError: no dense baseline, or no metric comparable with it.
    """
    if not dense:
        raise ValueError("no dense baseline")
    changes = {label: relative_change_pct(m, dense) for label, m in models.items() if m}
    keys = list(dict.fromkeys((t, k) for ch in changes.values() for t, per in ch.items() for k in per))
    if not keys:
        raise ValueError("no metric is comparable with the dense baseline")
    labels = [lab for lab, ch in changes.items() if ch]
    width = 0.8 / len(labels)
    fig, (ax,) = _new_figure(min(11.0, max(6.0, 0.38 * len(keys) * len(labels) + 2.0)), 4.6)
    colors = _colors(len(labels))
    for i, (lab, color) in enumerate(zip(labels, colors, strict=True)):
        xs = [j + (i - (len(labels) - 1) / 2) * width for j in range(len(keys))]
        vals = [changes[lab].get(t, {}).get(k, math.nan) for t, k in keys]
        bars = ax.bar(xs, vals, width=width * 0.95, color=color, label=lab, edgecolor="black", linewidth=0.4)
        for b, v in zip(bars, vals, strict=True):
            if math.isfinite(v):
                ax.annotate(f"{v:+.1f}", (b.get_x() + b.get_width() / 2, v), fontsize=6, ha="center",
                            va="bottom" if v >= 0 else "top", xytext=(0, 2 if v >= 0 else -2),
                            textcoords="offset points")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels([f"{t}.{k}" for t, k in keys], rotation=40, ha="right", fontsize=8)
    # separate tasks with faint vertical lines
    for j in range(1, len(keys)):
        if keys[j][0] != keys[j - 1][0]:
            ax.axvline(j - 0.5, color="gray", lw=0.6, alpha=0.5)
    ax.set_ylabel("change vs dense (%), positive = better")
    ax.set_title("Metrics vs dense")
    ax.grid(axis="y", alpha=0.3)
    ax.margins(y=0.15)
    _legend(ax, len(labels), loc="best")
    return _save(fig, path)
