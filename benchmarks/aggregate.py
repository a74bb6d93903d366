"""Turn per-run benchmark summaries into results.json, a Markdown table and a ΔT-vs-sparsity plot."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from benchmarks.provenance import describe
from pipeline.metrics.summary import delta_p, delta_t

HEADLINE = {"seg": ["miou"], "depth": ["abs_err", "rel_err"], "normal": ["mean"]}

# Two-sided 95 % Student-t quantiles t_{0.975, df} for df = 1..30 (scipy need not be installed); beyond 30
# the quantile is within 0.04 of the normal's 1.960 and is interpolated in 1/df towards it.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)


def t_quantile_975(df: int) -> float:
    """t_{0.975} with `df` degrees of freedom (the half-width factor of a two-sided 95 % interval)."""
    if df < 1:
        raise ValueError("a t-interval needs at least 2 paired values (df >= 1)")
    if df <= 30:
        return _T975[df - 1]
    return 1.960 + (_T975[29] - 1.960) * 30 / df


def paired_interval(diffs: list[float]) -> tuple[float, float, float]:
    """Mean of paired differences and its 95 % t-interval (lo, hi); a single pair gives an infinite interval."""
    m = statistics.fmean(diffs)
    if len(diffs) < 2:
        return m, float("-inf"), float("inf")
    half = t_quantile_975(len(diffs) - 1) * statistics.stdev(diffs) / len(diffs) ** 0.5
    return m, m - half, m + half


def _ms(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _mean_metrics(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    tasks = runs[0]["metrics"]
    return {t: {m: statistics.fmean(r["metrics"][t][m] for r in runs) for m in tasks[t]} for t in tasks}


def aggregate(results: list[dict[str, Any]], reference: str = "adapmtl") -> dict[str, Any]:
    """Rows per (method, target) with ΔT / Δp against the dense mean, each paired on seeds with `reference`
    (keys `adapmtl_minus_this*`: reference minus this method, with a 95 % t-interval)."""
    dense_runs = [r for r in results if r["method"] == "dense"]
    dense_mean = _mean_metrics(dense_runs)
    dense_by_seed = {r["seed"]: r for r in dense_runs}
    for r in results:
        r["delta_t"] = delta_t(r["metrics"], dense_mean)["overall"]
        r["delta_p"] = delta_p(r["metrics"], dense_mean)["overall"]
        r["delta_t_per_task"] = delta_t(r["metrics"], dense_mean)["per_task"]
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["method"], r["target"]), []).append(r)
    rows = []
    for (method, target), runs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        dt, dt_sd = _ms([r["delta_t"] for r in runs])
        dp, dp_sd = _ms([r["delta_p"] for r in runs])
        metrics = _mean_metrics(runs)
        comps = {c: statistics.fmean(r["sparsity"]["components"].get(c, 0.0) for r in runs)
                 for c in runs[0]["sparsity"]["components"]}
        row = {
            "method": method, "target": target, "seeds": sorted(r["seed"] for r in runs),
            "delta_t": dt, "delta_t_sd": dt_sd, "delta_p": dp, "delta_p_sd": dp_sd,
            "delta_t_per_seed": [r["delta_t"] for r in sorted(runs, key=lambda r: r["seed"])],
            "overall": statistics.fmean(r["sparsity"]["overall"] for r in runs),
            "components": comps, "metrics": metrics,
        }
        ref = {r["seed"]: r for r in groups.get((reference, target), [])}
        if method != reference and ref:
            diffs = [ref[r["seed"]]["delta_t"] - r["delta_t"] for r in runs if r["seed"] in ref]
            if diffs:
                row["adapmtl_minus_this"], row["adapmtl_minus_this_sd"] = _ms(diffs)
                row["adapmtl_minus_this_per_seed"] = diffs
                row["adapmtl_minus_this_ci95"] = list(paired_interval(diffs)[1:])
        rows.append(row)
    dense_seed_dt = [delta_t(r["metrics"], dense_mean)["overall"] for r in dense_by_seed.values()]
    return {"rows": rows, "dense_mean": dense_mean, "dense_seed_delta_t": dense_seed_dt, "reference": reference}


def markdown(agg: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [
        "# Quality benchmark results", "",
        f"Produced by `{meta['command']}` on {meta['date']}"
        + (f", {describe(meta)}" if "git_commit" in meta else "")
        + f" ({meta['machine']}, python {meta['python']}, "
        f"torch {meta['torch']}); {meta['steps']} steps per run, preset `{meta['preset']}`, "
        f"seeds {meta['seeds']} (paired: same init and batch order across methods); the runs took "
        f"{meta.get('run_seconds_total', 0) / 60:.0f} process-minutes ({meta.get('jobs', 1)} in parallel, "
        "one torch thread each).", "",
        "ΔT (AdapMTL sum form) and Δp (LibMTL mean form) are in percent points against the mean of the dense "
        "seeds; ± is the standard deviation over seeds. 'paired vs reference' is the reference method's ΔT minus "
        "this method's ΔT on the same seed: the mean and its 95 % t-interval; positive means the reference is better. A method whose achieved "
        "sparsity differs from the target by more than 0.5 pp is not comparable at that target (see 'achieved').",
        "",
        f"Dense seeds' own ΔT against their mean: {', '.join(f'{v:+.2f}' for v in agg['dense_seed_delta_t'])}.", "",
    ]
    lines += summary_table(agg)
    cols = [f"{t} {m}" for t, ms in HEADLINE.items() for m in ms]
    lines.append("| target | method | achieved | components | " + " | ".join(cols) +
                 " | ΔT | Δp | paired vs reference |")
    lines.append("|" + "---|" * (7 + len(cols)))
    for r in agg["rows"]:
        comps = " / ".join(f"{c} {v:.3f}" for c, v in r["components"].items())
        vals = [f"{r['metrics'][t][m]:.4g}" for t, ms in HEADLINE.items() for m in ms if t in r["metrics"]]
        paired = _interval_text(r, 2)
        lines.append(
            f"| {r['target']:.2f} | {r['method']} | {r['overall']:.4f} | {comps} | " + " | ".join(vals) +
            f" | {r['delta_t']:+.2f} ± {r['delta_t_sd']:.2f} | {r['delta_p']:+.2f} ± {r['delta_p_sd']:.2f} | {paired} |"
        )
    lines += ["", "Per-seed ΔT:", ""]
    for r in agg["rows"]:
        lines.append(f"- {r['method']} @ {r['target']:.2f}: " + ", ".join(f"{v:+.2f}" for v in r["delta_t_per_seed"]))
    return "\n".join(lines) + "\n"


def _interval_text(r: dict[str, Any], digits: int) -> str:
    """'+2.2 (−1.0, +5.4)': the paired mean difference and its 95 % t-interval."""
    if "adapmtl_minus_this" not in r:
        return ""
    lo, hi = r.get("adapmtl_minus_this_ci95", (float("-inf"), float("inf")))
    return f"{r['adapmtl_minus_this']:+.{digits}f} ({lo:+.{digits}f}, {hi:+.{digits}f})"


def _on_target(r: dict[str, Any]) -> bool:
    return abs(r["overall"] - r["target"]) <= 0.005


def summary_table(agg: dict[str, Any]) -> list[str]:
    """ΔT per method (rows) and target (columns), each cell with the paired difference to AdapMTL."""
    targets = sorted({r["target"] for r in agg["rows"] if r["method"] != "dense"})
    by = {(r["method"], r["target"]): r for r in agg["rows"]}
    methods = list(dict.fromkeys(r["method"] for r in agg["rows"] if r["method"] != "dense"))
    methods.sort(key=lambda m: m != "adapmtl")
    lines = [
        "## Summary", "",
        f"ΔT mean ± sd over seeds; in brackets `{agg.get('reference', 'adapmtl')}` minus the method on the same "
        "seed: the paired mean difference and its 95 % t-interval (positive: the reference is better; an interval "
        "that contains 0 is no evidence either way). *achieved x*: the method missed the target by more than "
        "0.5 pp, so it is not comparable there.", "",
        "| method | " + " | ".join(f"{t:g}" for t in targets) + " |",
        "|---|" + "---|" * len(targets),
    ]
    for m in methods:
        cells = []
        for t in targets:
            r = by.get((m, t))
            if r is None:
                cells.append("")
                continue
            cell = f"{r['delta_t']:+.1f} ± {r['delta_t_sd']:.1f}"
            if "adapmtl_minus_this" in r:
                cell += f" [{_interval_text(r, 1)}]"
            if not _on_target(r):
                cell += f" *achieved {r['overall']:.3f}*"
            cells.append(cell)
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines + ["", "## All rows", ""]


def plot(agg: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    # a method that missed its target is not comparable at that sparsity: left out, and said so
    on_target = [r for r in agg["rows"] if r["method"] != "dense" and _on_target(r)]
    missed_by: dict[str, list[str]] = {}
    for r in sorted(agg["rows"], key=lambda r: r["target"]):
        if r["method"] != "dense" and not _on_target(r):
            missed_by.setdefault(r["method"], []).append(f"{r['target']:g}→{r['overall']:.3f}")
    missed = [f"{m} ({', '.join(v)})" for m, v in missed_by.items()]
    methods = sorted({r["method"] for r in on_target})
    for m in methods:
        rows = sorted((r for r in on_target if r["method"] == m), key=lambda r: r["target"])
        ax.errorbar([r["target"] for r in rows], [r["delta_t"] for r in rows], yerr=[r["delta_t_sd"] for r in rows],
                    marker="o", capsize=3, label=m, lw=2.2 if m == "adapmtl" else 1.2)
    ax.axhline(0, color="k", lw=0.8, ls="--")
    if missed:
        ax.set_title("not shown, missed the target: " + ", ".join(missed), fontsize=8)
    ax.set_xlabel("overall sparsity")
    ax.set_ylabel("ΔT vs dense (points)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(results: list[dict[str, Any]], meta: dict[str, Any], out: Path, reference: str = "adapmtl") -> Path:
    agg = aggregate(results, reference)
    (out / "results.json").write_text(json.dumps({"meta": meta, **agg, "runs": results}, indent=1))
    (out / "results.md").write_text(markdown(agg, meta))
    plot(agg, out / "delta_t.png")
    return out / "results.md"


__all__ = ["aggregate", "markdown", "paired_interval", "summary_table", "t_quantile_975", "write_results"]
