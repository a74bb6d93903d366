"""The int8 section of the cost benchmark: dense fp32 / pruned fp32 / pruned int8 on ONNX Runtime CPU (issue #16).

Latency and size only, at the paper's size (`deeplab_resnet34` + ASPP heads, 144x192) and the demo size (the demo
preset's model and input). The weights are the training init (prunable convs ~ N(0, 0.01)), pruned to the target
by per-layer magnitude (classifiers dense, as by the default rules), and quantized by the quantize stage's
library (`exporters.quantize.quantize_int8`, the `quantize:` defaults for everything but the calibration method)
on rendered TRAINING scenes of the same size. Untrained activations are too narrow for ONNX Runtime's histogram
calibrators, so min/max calibration is the default here; calibration does not change the graph that is timed.
The three models are timed side by side in one process by `deploy.latency_table.latency_table`, the function
the quantize stage's latency table uses. Accuracy is the quality benchmark's job (`benchmarks.quality --int8`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.cost.machine import machine_info
from benchmarks.provenance import git_state
from deploy.latency_table import format_latency_table, latency_table
from exporters.onnx_export import export_onnx
from exporters.quantize import quantize_int8
from pipeline.config import QuantizeConfig, load_config
from pipeline.data import build_dataset, iter_batches
from pipeline.models.multitask import task_channels
from pipeline.models.registry import create_model
from trainers.assembly import init_conv_weights_

__all__ = ["INT8_SIZES", "int8_models", "prune_per_layer_", "render_int8", "run_int8_section"]

# size name -> (model, height, width); None means the demo preset's own
INT8_SIZES: dict[str, tuple[str | None, int | None, int | None]] = {
    "paper": ("deeplab_resnet34", 144, 192),
    "demo": (None, None, None),
}
WEIGHTS = "init N(0, 0.01), per-layer magnitude pruning (classifiers dense)"


def prune_per_layer_(model: torch.nn.Module, target: float) -> None:
    """Zero the smallest `target` fraction of each prunable conv (classifiers stay dense, as by the default rules)."""
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, torch.nn.Conv2d) and "classifier" not in name:
                k = int(target * m.weight.numel())
                if k:
                    cut = m.weight.abs().flatten().kthvalue(k).values
                    m.weight.mul_(m.weight.abs() > cut)


def int8_models(
    model_name: str | None, height: int | None, width: int | None, work: Path, *, target: float = 0.9,
    calibration: int = 16, method: str = "minmax",
) -> tuple[dict[str, Path], dict[str, Any]]:
    """Export dense fp32 and pruned fp32, quantize the pruned one: `({name: path}, settings)`."""
    overrides = ["data.num_train=64"]
    if height is not None:
        overrides += [f"data.height={height}", f"data.width={width}"]
    cfg = load_config("demo", overrides)
    model_name = model_name or cfg.model.name
    h, w = cfg.data.height, cfg.data.width
    work = Path(work) / f"{model_name}_{h}x{w}"
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = create_model(model_name, task_channels(cfg.tasks, cfg.data.num_classes)).eval()
    init_conv_weights_(model, "normal001", 0)
    x = torch.rand(1, 3, h, w)
    paths = {"dense_fp32": work / "dense.onnx", "pruned_fp32": work / "pruned.onnx", "pruned_int8": work / "int8.onnx"}
    export_onnx(model, paths["dense_fp32"], task_names=list(cfg.tasks), example_input=x)
    prune_per_layer_(model, target)
    export_onnx(model, paths["pruned_fp32"], task_names=list(cfg.tasks), example_input=x)
    train = build_dataset(cfg.data, "train", list(cfg.tasks))
    images = np.concatenate([b["image"].numpy() for b in iter_batches(train, 8, limit=calibration)])
    q = QuantizeConfig()
    quantize_int8(paths["pruned_fp32"], paths["pruned_int8"], images, method=method,
                  activation_type=q.activation_type, percentile=q.percentile)
    settings = {"model": model_name, "height": h, "width": w, "target": target, "weights": WEIGHTS,
                "calibration": method, "calibration_images": int(len(images)), "calibration_split": "train"}
    return paths, settings


def run_int8_section(args: Any, log: Callable[[str], None] = print) -> dict[str, Any]:
    """One latency table per size in `args.int8_sizes` (`--quick`: demo only, one short round)."""
    sizes = ["demo"] if args.quick else list(args.int8_sizes)
    rounds, iters = (1, 2) if args.quick else (args.int8_rounds, args.int8_iters)
    out: dict[str, Any] = {}
    for size in sizes:
        model, h, w = INT8_SIZES[size]
        log(f"[int8] {size}: export dense / pruned, quantize")
        paths, settings = int8_models(model, h, w, Path(args.work) / "int8")
        log(f"[int8] {size}: {settings['model']} {settings['height']}x{settings['width']}, "
            f"{rounds} interleaved rounds x {iters} runs per configuration")
        table = latency_table(paths, [3, settings["height"], settings["width"]], rounds=rounds, iters_per_round=iters,
                              threads=args.int8_threads)
        table["settings"] |= settings | git_state()
        # the training sections may have run on another machine: the table names its own CPU
        table["machine"]["cpu_model"] = machine_info(1)["cpu_model"]
        out[size] = table
        log(format_latency_table(table))
    return out


def _summary_rows(table: dict[str, Any]) -> list[str]:
    """One row per model: sizes, then p50 (ratio to dense) per batch and thread count."""
    keys = sorted({(r["batch"], r["threads"]) for r in table["rows"]})
    dense = table["settings"]["baseline"]
    lines = [
        "| model | raw | gzipped | " + " | ".join(f"batch {b}, {t} thread{'s' if t > 1 else ''}" for b, t in keys) + " |",
        "|---|---|---|" + "---|" * len(keys),
    ]
    for name, s in table["sizes"].items():
        cells = []
        for b, t in keys:
            r = next(r for r in table["rows"] if r["model"] == name and r["batch"] == b and r["threads"] == t)
            cells.append(f"{r['p50_ms']:.2f} ms" + ("" if name == dense else f" ({r['ratio_p50']:.2f}×)"))
        lines.append(f"| {name} | {s['raw_bytes'] / 1e6:.2f} MB | {s['gzip_bytes'] / 1e6:.2f} MB | "
                     + " | ".join(cells) + " |")
    return lines


def render_int8(section: dict[str, Any]) -> list[str]:
    """results.md lines: per size, a p50 summary, where it came from, and the full p50/p90/p99 table."""
    lines = [
        "", "## INT8: dense fp32 / pruned fp32 / pruned int8 (ONNX Runtime CPU)", "",
        "Wall-clock times (`deploy.latency.measure`, perf_counter), unlike the CPU times above: the three models "
        "are timed interleaved in one process (`deploy.latency_table`), so their ratios share the machine's "
        "noise. Latency and size only; int8's accuracy cost is in benchmarks/results/int8_quality/.", "",
    ]
    for size, table in section.items():
        s, m = table["settings"], table["machine"]
        lines += [
            f"### {size}: `{s['model']}`, {s['height']}x{s['width']}", "",
            f"Weights: {s['weights']}, target {s['target']:g}; int8 calibration {s['calibration']} on "
            f"{s.get('calibration_images', '?')} {s.get('calibration_split', 'train')} images. ONNX Runtime "
            f"{m['onnxruntime']} {m['provider']}, {m.get('cpu_model', 'CPU not recorded')}, {m['cpu_count']} CPUs; {s['rounds']} interleaved rounds x "
            f"{s['iters_per_round']} runs per configuration after {s['warmup']} warm-up runs"
            + (f"; commit `{str(s['git_commit'])[:12]}`" if s.get("git_commit") else "") + ".",
            "",
        ]
        if table.get("provenance"):
            lines += [table["provenance"], ""]
        lines += _summary_rows(table) + ["", format_latency_table(table), ""]
    return lines
