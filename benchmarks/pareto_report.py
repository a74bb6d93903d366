"""The Pareto benchmark's results: ΔT per point (paired seeds), latency side by side, goal verdicts, a figure."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from benchmarks.aggregate import paired_interval
from benchmarks.provenance import describe
from pipeline.metrics.summary import delta_t

GOAL_LATENCY = 0.5  # issue #17: <= 0.5x the dense model's ONNX Runtime CPU latency
GOAL_DT_SLACK = 5.0  # ... with ΔT no worse than 5 points below unstructured AdapMTL 0.9


def _mean_metrics(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    tasks = runs[0]["metrics"]
    return {t: {m: statistics.fmean(r["metrics"][t][m] for r in runs) for m in tasks[t]} for t in tasks}


def _p50(latency: dict[str, Any] | None, model: str, batch: int, threads: int) -> float | None:
    for r in (latency or {}).get("rows", []):
        if (r["model"], r["batch"], r["threads"]) == (model, batch, threads):
            return r["p50_ms"]
    return None


def aggregate(results: list[dict[str, Any]], latency: dict[str, Any] | None) -> dict[str, Any]:
    """Rows per point (ΔT mean/std over seeds vs the dense mean, MACs, sizes, latency) and paired comparisons."""
    dense = [r for r in results if r["point"] == "dense"]
    if not dense:
        raise ValueError("the Pareto aggregate needs the dense point (the ΔT reference)")
    ref = _mean_metrics(dense)
    by_point: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        r["delta_t"] = delta_t(r["metrics"], ref)["overall"]
        by_point.setdefault(r["point"], []).append(r)
    settings = (latency or {}).get("settings", {})
    combos = [(b, t) for b in settings.get("batches", []) for t in settings.get("threads", [])]
    rows = []
    for point, runs in by_point.items():
        dts = [r["delta_t"] for r in runs]
        dep = next((r["deploy"] for r in runs if "deploy" in r), None)
        row = {
            "point": point, "structure": runs[0]["structure"], "method": runs[0]["base_method"],
            "target": runs[0]["target"], "n": len(runs), "seeds": sorted(r["seed"] for r in runs),
            "delta_t": statistics.fmean(dts), "delta_t_std": statistics.stdev(dts) if len(dts) > 1 else 0.0,
            "overall": statistics.fmean(r["sparsity"]["overall"] for r in runs),
            "param_sparsity": statistics.fmean(r["sparsity"]["param_sparsity"] for r in runs),
        }
        if dep:
            ch = dep.get("channels") or {}
            row["mac_fraction_removed"] = ch.get("mac_fraction_removed", 0.0)
            row["macs_kept"] = ch.get("macs_compact")
            ort = dep.get("ort_metrics") or {}
            if ort.get("int8") and ort.get("fp32"):  # int8 minus fp32 on the latency seed, in ΔT points
                row["int8_delta_t_shift"] = (delta_t(ort["int8"], ref)["overall"]
                                             - delta_t(ort["fp32"], ref)["overall"])
                row["int8_gate_passed"] = dep.get("int8_gate_passed")
            for kind in ("fp32", "int8"):
                name = f"{point}_{kind}"
                if latency and name in latency["sizes"]:
                    row[f"{kind}_bytes"] = latency["sizes"][name]["raw_bytes"]
                for b, t in combos:
                    p, d = _p50(latency, name, b, t), _p50(latency, "dense_fp32", b, t)
                    if p is not None:
                        row[f"{kind}_p50_b{b}_t{t}"] = p
                        row[f"{kind}_vs_dense_b{b}_t{t}"] = p / d if d else None
        rows.append(row)
    return {"rows": rows, "paired": _paired(by_point), "goals": _goals(rows, by_point, combos)}


def _diffs(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[float]:
    bs = {r["seed"]: r["delta_t"] for r in b}
    return [r["delta_t"] - bs[r["seed"]] for r in a if r["seed"] in bs]


def _paired(by_point: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """AdapMTL channel minus each L1 baseline at the same MAC target, and minus unstructured AdapMTL 0.9."""
    out = []
    for name, runs in by_point.items():
        if not name.startswith("adapmtl_c"):
            continue
        tgt = name.removeprefix("adapmtl_c")
        for other in (f"l1_uniform_c{tgt}", f"l1_global_c{tgt}", "adapmtl_u0.9"):
            d = _diffs(runs, by_point.get(other, []))
            if d:
                m, lo, hi = paired_interval(d)
                out.append({"a": name, "b": other, "n": len(d), "mean": m, "lo": lo, "hi": hi})
    return out


def _goals(rows: list[dict[str, Any]], by_point: dict[str, list[dict[str, Any]]], combos) -> dict[str, Any]:
    """The issue's two goals, per channel AdapMTL point (None where a needed number was not measured)."""
    u9 = next((r for r in rows if r["point"] == "adapmtl_u0.9"), None)
    out = {}
    for r in rows:
        if not r["point"].startswith("adapmtl_c"):
            continue
        ratios = {f"b{b}_t{t}": r.get(f"fp32_vs_dense_b{b}_t{t}") for b, t in combos}
        fast = all(v is not None and v <= GOAL_LATENCY for v in ratios.values()) if ratios else None
        good = None if u9 is None else r["delta_t"] >= u9["delta_t"] - GOAL_DT_SLACK
        tgt = r["point"].removeprefix("adapmtl_c")
        beats = {}
        for other in (f"l1_uniform_c{tgt}", f"l1_global_c{tgt}"):
            d = _diffs(by_point[r["point"]], by_point.get(other, []))
            beats[other] = None if len(d) < 2 else paired_interval(d)[1] > 0
        out[r["point"]] = {"latency_ratios": ratios, "latency_goal": fast, "delta_t_goal": good,
                           "beats_l1_by_more_than_interval": beats}
    return out


def _f(v: Any, fmt: str = ".2f") -> str:
    return "-" if v is None else format(v, fmt)


def markdown(agg: dict[str, Any], latency: dict[str, Any] | None, paper: dict[str, Any] | None,
             meta: dict[str, Any]) -> str:
    from deploy.latency_table import format_latency_table

    seeds = meta["seed_list"]
    lines = [
        "# Pareto benchmark: ΔT against ONNX Runtime CPU latency (issue #17)", "",
        f"`{meta['command']}` at {describe(meta)}, {meta['date']}; preset `{meta['preset']}` ({meta['steps']} steps, "
        f"{meta['data']['model']} at {meta['data']['height']}x{meta['data']['width']}), seeds {seeds}. ΔT in % "
        "against the mean of the dense runs (dev/val split); latency: the seed-"
        f"{meta['latency_seed']} model of each point, ONNX Runtime CPU, all models side by side in one process "
        f"(machine: {meta['machine']}; ORT {(latency or {}).get('machine', {}).get('onnxruntime', '-')}).", "",
        "| point | structure | target | MACs removed | params removed | ΔT mean ± std (n) | int8 ΔT shift | "
        "fp32 MB | int8 MB | fp32 p50 b1/t1 ms (× dense) | fp32 p50 b8/t2 ms (× dense) | int8 p50 b1/t1 ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in agg["rows"]:
        lines.append(
            f"| {r['point']} | {r['structure']} | {_f(r['target'])} | {_f(r.get('mac_fraction_removed'), '.3f')} | "
            f"{_f(r['param_sparsity'], '.3f')} | {r['delta_t']:+.2f} ± {r['delta_t_std']:.2f} ({r['n']}) | "
            f"{_f(r.get('int8_delta_t_shift'), '+.2f')} | {_f((r.get('fp32_bytes') or 0) / 1e6 or None)} | "
            f"{_f((r.get('int8_bytes') or 0) / 1e6 or None)} | {_f(r.get('fp32_p50_b1_t1'), '.3f')} "
            f"({_f(r.get('fp32_vs_dense_b1_t1'))}x) | {_f(r.get('fp32_p50_b8_t2'), '.3f')} "
            f"({_f(r.get('fp32_vs_dense_b8_t2'))}x) | {_f(r.get('int8_p50_b1_t1'), '.3f')} |")
    lines += ["", "Paired differences of ΔT (a − b, same seeds) with 95 % t-intervals:", "",
              "| a | b | n | mean | 95 % interval |", "|---|---|---:|---:|---|"]
    for p in agg["paired"]:
        lines.append(f"| {p['a']} | {p['b']} | {p['n']} | {p['mean']:+.2f} | [{p['lo']:+.2f}, {p['hi']:+.2f}] |")
    lines += ["", "Goals (issue #17):", ""]
    for name, g in agg["goals"].items():
        lines.append(f"- {name}: latency ≤ {GOAL_LATENCY}x dense in every (batch, threads): {g['latency_goal']} "
                     f"({', '.join(f'{k} {_f(v)}x' for k, v in g['latency_ratios'].items())}); ΔT within "
                     f"{GOAL_DT_SLACK:g} points of unstructured 0.9: {g['delta_t_goal']}; beats the L1 baselines by "
                     f"more than the paired interval: {g['beats_l1_by_more_than_interval']}")
    if latency:
        lines += ["", "## Latency, demo model (all rows)", "", format_latency_table(latency)]
    if paper:
        s = paper["latency"]["settings"]
        lines += ["", f"## Latency, paper-size model ({s['model']} at {s['height']}x{s['width']}; {s['weights']})",
                  "", "| plan | MACs removed | MACs kept | params |", "|---|---:|---:|---:|"]
        for k, v in paper["macs"].items():
            lines.append(f"| {k} | {v['mac_fraction_removed']:.3f} | {v['macs_compact']:,} | {v['params_compact']:,} |")
        lines += ["", format_latency_table(paper["latency"])]
    return "\n".join(lines) + "\n"


def plot(agg: dict[str, Any], path: Path, batch: int = 1, threads: int = 1) -> None:
    """ΔT against fp32 (filled) and int8 (hollow) p50 latency at one (batch, threads), one colour per family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"dense": "black", "adapmtl_u": "tab:blue", "adapmtl_c": "tab:red", "l1_uniform": "tab:green",
               "l1_global": "tab:orange"}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in agg["rows"]:
        c = next(v for k, v in colours.items() if r["point"].startswith(k))
        x = r.get(f"fp32_p50_b{batch}_t{threads}")
        if x is None:
            continue
        ax.errorbar(x, r["delta_t"], yerr=r["delta_t_std"], fmt="o", color=c, capsize=3)
        ax.annotate(r["point"], (x, r["delta_t"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
        xi = r.get(f"int8_p50_b{batch}_t{threads}")
        if xi is not None and r.get("int8_delta_t_shift") is not None:
            ax.plot(xi, r["delta_t"] + r["int8_delta_t_shift"], "o", mfc="none", color=c)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel(f"ONNX Runtime CPU p50 latency, batch {batch}, {threads} thread(s) [ms]")
    ax.set_ylabel("ΔT vs dense [%] (mean ± std over seeds)")
    ax.set_title("Demo model: quality vs latency (filled fp32, hollow int8)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(results: list[dict[str, Any]], latency: dict[str, Any] | None, paper: dict[str, Any] | None,
                  meta: dict[str, Any], out: Path) -> Path:
    agg = aggregate(results, latency)
    path = out / "results.json"
    path.write_text(json.dumps({"meta": meta, "aggregate": agg, "latency": latency, "paper": paper,
                                "runs": results}, indent=1) + "\n")
    (out / "results.md").write_text(markdown(agg, latency, paper, meta))
    if latency:
        plot(agg, out / "pareto.png")
    return path
