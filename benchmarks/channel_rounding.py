"""Does rounding kept channel counts up to a multiple (`harden.channel_multiple`) make a channel-pruned model faster?

    python -m benchmarks.channel_rounding                       # demo model (scene_aspp, 64x80) and paper size
    python -m benchmarks.channel_rounding --models scene_aspp   # the demo model only (a minute)

Latency only, untrained weights: each model gets an `l1_uniform` channel plan at each MAC target (the same rate
in every coupled group), then harden's own compaction (`trainers.sparsity.harden.channel_compact_`) with
`multiple` = 1 (the plan as is), 8 and 16; the rounding keeps extra all-zero channels, so the outputs are the
unrounded model's. Every ONNX file of one model is timed side by side in one process (`deploy.latency_table`).
Writes `<out>/results.json` and `results.md`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.provenance import describe, git_state
from pipeline.config import load_config

SIZES = {"scene_aspp": (64, 80), "deeplab_resnet34": (144, 192)}


def _exports(model_name: str, h: int, w: int, targets: list[float], multiples: list[int], work: Path
             ) -> tuple[dict[str, Path], dict[str, float]]:
    from exporters.onnx_export import export_onnx
    from pipeline.models.multitask import task_channels
    from pipeline.models.registry import create_model
    from trainers.assembly import init_conv_weights_
    from trainers.sparsity.harden import channel_compact_, harden_
    from trainers.sparsity.methods import build_method

    cfg = load_config("demo", [f"data.height={h}", f"data.width={w}", "sparsity.structure=channel",
                               "sparsity.method=l1_uniform"])
    x = torch.rand(1, 3, h, w)
    paths, removed = {}, {}
    for target, multiple in [(0.0, 1)] + [(t, m) for t in targets for m in multiples]:
        torch.manual_seed(0)
        model = create_model(model_name, task_channels(cfg.tasks, cfg.data.num_classes)).eval()
        init_conv_weights_(model, "normal001", 0)
        name = "dense" if target == 0 else f"c{target}_m{multiple}"
        if target > 0:
            method, _ = build_method(dataclasses.replace(cfg.sparsity, target=target), 1)
            method.attach(model, list(cfg.tasks), example=x)
            method.finalize()
            harden_(method)
            _, _, _, ch = channel_compact_(model, method, x, None, multiple=multiple)
            removed[name] = ch["mac_fraction_removed"]
        paths[name] = work / f"{name}.onnx"
        export_onnx(model.eval(), paths[name], task_names=list(cfg.tasks), example_input=x)
    return paths, removed


def measure(model_name: str, targets: list[float], multiples: list[int], work: Path, batches: list[int],
            iters: int) -> dict[str, Any]:
    from deploy.latency_table import latency_table

    h, w = SIZES[model_name]
    work.mkdir(parents=True, exist_ok=True)
    paths, removed = _exports(model_name, h, w, targets, multiples, work)
    table = latency_table(paths, [3, h, w], batches=batches, threads=[1], warmup=2, rounds=5, iters_per_round=iters)
    for p in paths.values():
        p.unlink()  # paper-size files are hundreds of MB each
    return {"model": model_name, "height": h, "width": w, "macs_removed": removed, "latency": table}


def to_markdown(res: dict[str, Any]) -> str:
    lines = [
        "# Channel counts rounded to multiples: ONNX Runtime CPU latency", "",
        f"`{res['command']}` at {describe(res['provenance'])}, {res['date']}. Untrained weights, `l1_uniform` "
        "plans at each MAC target, compacted by harden's `channel_compact_` with `multiple` = m (extra channels "
        "kept as zeros: same outputs). One thread; p50 of 5 interleaved rounds; ratio = p50 / dense p50 at the "
        f"same batch. Machine: {res['machine']}.", "",
    ]
    for m in res["models"]:
        lines += [f"## {m['model']} ({m['height']}x{m['width']})", "",
                  "| model | MACs removed | batch | p50 ms | × dense |", "|---|---:|---:|---:|---:|"]
        for r in m["latency"]["rows"]:
            lines.append(f"| {r['model']} | {m['macs_removed'].get(r['model'], 0.0):.3f} | {r['batch']} | "
                         f"{r['p50_ms']:.2f} | {r['ratio_p50']:.2f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(SIZES), choices=list(SIZES))
    p.add_argument("--targets", type=float, nargs="+", default=[0.5, 0.75])
    p.add_argument("--multiples", type=int, nargs="+", default=[1, 8, 16])
    p.add_argument("--out", default="benchmarks/results/channel_rounding")
    p.add_argument("--work", default=".cache/channel_rounding")
    args = p.parse_args(argv)
    import sys

    from benchmarks.cost.machine import machine_info

    machine = machine_info(1)
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    models = []
    for name in args.models:
        small = name == "scene_aspp"
        models.append(measure(name, args.targets, args.multiples, Path(args.work) / name,
                              batches=[1, 8] if small else [1], iters=20 if small else 2))
    res = {
        "command": "python -m benchmarks.channel_rounding " + " ".join(argv if argv is not None else sys.argv[1:]),
        "provenance": git_state(), "date": time.strftime("%Y-%m-%d"),
        "machine": f"{machine['cpu_model']}, {machine['logical_cpus']} logical CPUs, {simd}, ONNX Runtime "
                   f"{machine['onnxruntime']}, load average at start {machine['loadavg_start'][0]:.1f}",
        "models": models,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=1) + "\n")
    (out / "results.md").write_text(to_markdown(res))
    print(to_markdown(res))


if __name__ == "__main__":
    main()
