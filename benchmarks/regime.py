"""The regime question: does the method ranking of the 400-step grid hold when training is longer, or when
pruning starts from a trained dense model?

    python -m benchmarks.regime --split test2 --seeds 8 9 --methods adapmtl gmp_global str

For each paired seed of the split it trains
- **long**: every method and a dense model for `--long-steps` (default 1,200, three times the grid's budget);
- **from trained**: a dense model for `--dense-steps` (600), then every method pruning from those weights for
  `--prune-steps` (600) through `train.dense_init`; ΔT is taken against the dense model trained for the same
  total (`--dense-steps + --prune-steps`, the long dense run), so the pruned model gets no extra training.
The 400-step numbers of the same seeds come from the committed held-out grid (`--base`).

Results: `<out>/long/` and `<out>/from_trained/` (each a quality-style results.json/results.md, paired against
`adapmtl`), and `<out>/regime.md` / `regime.json`: ΔT per regime side by side, the paired differences and the
ranking in each regime. Runs are cached like the quality grid, so an interrupted study continues.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

from benchmarks.aggregate import _on_target, aggregate, paired_interval, write_results
from benchmarks.heldout import SPLITS
from benchmarks.provenance import describe, git_state
from benchmarks.quality import run_one
from pipeline.config import load_config
from pipeline.data import build_dataset

REGIMES = ("base", "long", "from_trained")


def _job(method: str, target: float, seed: int, run_dir: Path, overrides: list[str], keep: bool = False) -> dict:
    ov = overrides + [f"train.seed={seed}", f"sparsity.method={method}"]
    if method != "dense":
        ov.append(f"sparsity.target={target}")
    return {"method": method, "target": target, "seed": seed, "preset": "bench", "dir": str(run_dir),
            "overrides": ov, "keep_checkpoint": keep}


def plan_seed(args: argparse.Namespace, seed: int) -> tuple[dict, list[dict], list[dict]]:
    """One seed's jobs: (the dense start point, jobs that need nothing, jobs that start from the dense point)."""
    out, split = Path(args.out), list(SPLITS[args.split].overrides)
    long_ov = split + [f"train.steps={args.long_steps}"]
    start = _job("dense", 0.0, seed, out / "from_trained" / "runs" / f"dense_start_s{seed}",
                 split + [f"train.steps={args.dense_steps}"], keep=True)
    ckpt = Path(start["dir"]) / "checkpoint.pt"
    free = [_job("dense", 0.0, seed, out / "long" / "runs" / f"dense_s{seed}", long_ov)]
    after = []
    for target in args.sparsities:
        for m in args.methods:
            free.append(_job(m, target, seed, out / "long" / "runs" / f"{m}_{target}_s{seed}", long_ov))
            after.append(_job(m, target, seed, out / "from_trained" / "runs" / f"{m}_{target}_s{seed}",
                              split + [f"train.steps={args.prune_steps}", f"train.dense_init={ckpt}"]))
    return start, free, after


def run_all(args: argparse.Namespace) -> None:
    """Train every run not yet cached, cheapest regime first: the dense start points and long dense references
    of every seed, then each seed's from-trained runs (queued as soon as its start point exists), then the long
    runs. A study cut short thus has the from-trained regime for every seed before any long pruned run."""
    plans = {seed: plan_seed(args, seed) for seed in args.seeds}
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
        starts = {seed: pool.submit(run_one, start) for seed, (start, _, _) in plans.items()}
        pending: list[Future] = [pool.submit(run_one, free[0]) for _, free, _ in plans.values()]  # long dense
        for seed, (_, _, after) in plans.items():
            starts[seed].result()
            pending += [pool.submit(run_one, j) for j in after]
        pending += [pool.submit(run_one, j) for _, free, _ in plans.values() for j in free[1:]]
        for f in pending:
            res = f.result()
            print(f"{res['method']:20s} {res['target']:.2f} seed {res['seed']}  overall "
                  f"{res['sparsity']['overall']:.4f}  {res['seconds']:.0f}s", flush=True)


def _summaries(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(f.read_text()) for f in sorted(folder.glob("*/summary.json"))]


def regime_results(args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    """The finished runs of each regime, restricted to the requested seeds, methods and targets. The
    from-trained regime is scored against the long dense runs (same total training)."""
    out = Path(args.out)
    base = json.loads(Path(args.base).read_text())["runs"] if args.base and Path(args.base).exists() else []
    long_runs = _summaries(out / "long" / "runs")
    ft = [r for r in _summaries(out / "from_trained" / "runs") if r["method"] != "dense"]
    ft += [r for r in long_runs if r["method"] == "dense"]

    def keep(r: dict[str, Any]) -> bool:
        return r["seed"] in args.seeds and (r["method"] == "dense" or (
            r["method"] in args.methods and r["target"] in args.sparsities))

    return {"base": [r for r in base if keep(r)], "long": [r for r in long_runs if keep(r)],
            "from_trained": [r for r in ft if keep(r)]}


def compare(per_regime: dict[str, list[dict[str, Any]]], reference: str = "adapmtl") -> dict[str, Any]:
    """ΔT of every (method, target) in each regime, the paired difference to `reference` (95 % t-interval)
    and the ranking per regime and target (best first)."""
    cells: dict[str, dict[str, Any]] = {}
    ranking: dict[str, dict[str, list[str]]] = {}
    for regime, runs in per_regime.items():
        if not any(r["method"] == "dense" for r in runs) or not any(r["method"] != "dense" for r in runs):
            continue
        agg = aggregate([dict(r) for r in runs], reference)
        for row in agg["rows"]:
            if row["method"] == "dense":
                continue
            key = f"{row['method']}@{row['target']:g}"
            cell = {"delta_t": row["delta_t"], "seeds": row["seeds"], "overall": row["overall"],
                    "target": row["target"], "delta_t_per_seed": row["delta_t_per_seed"]}
            if "adapmtl_minus_this_per_seed" in row:
                m, lo, hi = paired_interval(row["adapmtl_minus_this_per_seed"])
                cell["reference_minus_this"] = {"mean": m, "ci95": [lo, hi]}
            cells.setdefault(key, {})[regime] = cell
            ranking.setdefault(regime, {}).setdefault(f"{row['target']:g}", []).append(row["method"])
        for target, methods in ranking.get(regime, {}).items():
            methods.sort(key=lambda m: -cells[f"{m}@{target}"][regime]["delta_t"])
    return {"reference": reference, "cells": cells, "ranking": ranking}


def _missed(cell: dict[str, Any]) -> str:
    """' *achieved x*' when the method missed its target by more than 0.5 pp (not comparable there), else ''."""
    return "" if _on_target(cell) else f" *achieved {cell['overall']:.3f}*"


def _fmt(cell: dict[str, Any] | None) -> str:
    if cell is None:
        return "not run"
    text = f"{cell['delta_t']:+.1f}"
    d = cell.get("reference_minus_this")
    if d:
        lo, hi = d["ci95"]
        text += f" [{d['mean']:+.1f} ({lo:+.1f}, {hi:+.1f})]" if lo > float("-inf") else f" [{d['mean']:+.1f}]"
    return text + _missed(cell)


def markdown(cmp: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [
        "# The regime question", "",
        f"Produced by `{meta['command']}` on {meta['date']}, {describe(meta)} ({meta['machine']}, torch "
        f"{meta['torch']}); split `{meta['split']}`, seeds {meta['seeds']}. Regimes: **base** = the committed "
        f"400-step grid; **long** = {meta['long_steps']} steps; **from trained** = dense {meta['dense_steps']} "
        f"steps, then pruning for {meta['prune_steps']} steps, scored against the dense model of the long "
        "regime (same total steps).", "",
        f"ΔT against each regime's own dense model; in brackets `{cmp['reference']}` minus the method on the same "
        "seed, with its 95 % t-interval when there are at least two seeds (positive: the reference is better). "
        "*achieved x*: the method missed its target by more than 0.5 pp, so it is not comparable there.", "",
        "| method @ sparsity | " + " | ".join(REGIMES) + " |", "|---|" + "---|" * len(REGIMES),
    ]
    for key, by_regime in cmp["cells"].items():
        lines.append(f"| {key} | " + " | ".join(_fmt(by_regime.get(r)) for r in REGIMES) + " |")
    lines += ["", "Ranking by mean ΔT (best first):", ""]
    for regime in REGIMES:
        for target, methods in sorted(cmp["ranking"].get(regime, {}).items()):
            cells = {m: cmp["cells"][f"{m}@{target}"][regime] for m in methods}
            lines.append(f"- {regime} @ {target}: " + " > ".join(m + _missed(cells[m]) for m in methods))
    return "\n".join(lines) + "\n"


def write(args: argparse.Namespace, meta: dict[str, Any]) -> Path:
    out = Path(args.out)
    per_regime = regime_results(args)
    for regime in ("long", "from_trained"):
        runs = per_regime[regime]
        if any(r["method"] == "dense" for r in runs) and any(r["method"] != "dense" for r in runs):
            steps = args.long_steps if regime == "long" else f"{args.dense_steps}+{args.prune_steps}"
            write_results([dict(r) for r in runs], meta | {"steps": steps, "preset": "bench",
                                                           "seeds": len(args.seeds)}, out / regime)
    cmp = compare(per_regime)
    (out / "regime.json").write_text(json.dumps({"meta": meta, **cmp}, indent=1))
    (out / "regime.md").write_text(markdown(cmp, meta))
    return out / "regime.md"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--split", choices=sorted(SPLITS), default="test2")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="paired seeds (default: all of the split's)")
    p.add_argument("--methods", nargs="+", default=["adapmtl", "adapmtl_hierarchical", "gmp_global", "str"])
    p.add_argument("--sparsities", nargs="+", type=float, default=[0.9, 0.97])
    p.add_argument("--long-steps", type=int, default=1200)
    p.add_argument("--dense-steps", type=int, default=600)
    p.add_argument("--prune-steps", type=int, default=600)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", default=None)
    p.add_argument("--base", default=None, help="results.json of the 400-step grid (default: the split's)")
    p.add_argument("--aggregate-only", action="store_true")
    args = p.parse_args(argv)
    args.seeds = args.seeds or list(SPLITS[args.split].seeds)
    args.out = args.out or f"benchmarks/results/regime_{args.split}"
    args.base = args.base or f"benchmarks/results/heldout_{args.split}/results.json"
    if args.long_steps != args.dense_steps + args.prune_steps:
        p.error("--long-steps must equal --dense-steps + --prune-steps: the long dense run is the reference of "
                "the from-trained regime")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    meta = {"command": "python -m benchmarks.regime " + " ".join(argv if argv is not None else sys.argv[1:]),
            "split": args.split, "seeds": args.seeds, "methods": args.methods, "sparsities": args.sparsities,
            "long_steps": args.long_steps, "dense_steps": args.dense_steps, "prune_steps": args.prune_steps,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores", "python": platform.python_version(),
            "torch": torch.__version__, "jobs": args.jobs, "date": time.strftime("%Y-%m-%d"), **git_state()}
    if not args.aggregate_only:
        cfg = load_config("bench", list(SPLITS[args.split].overrides))
        build_dataset(cfg.data, "train", cfg.tasks)  # render the scene cache once, before the workers start
        build_dataset(cfg.data, "val", cfg.tasks)
        t0 = time.perf_counter()
        run_all(args)
        meta["wall_seconds"] = time.perf_counter() - t0
    print(f"wrote {write(args, meta)}")


if __name__ == "__main__":
    main()
