"""Dense fp32 / pruned fp32 / pruned int8 latency of a registered model at a given size (issue #16).

Latency and size only: the weights are the training init (prunable convs ~ N(0, 0.01)), pruned to the target by
per-layer magnitude (classifiers dense), and quantized with the quantize stage's defaults, calibrated on rendered
training scenes of the same size. Accuracy is not measured here (the demo run's gate does that).

    python -m benchmarks.int8_latency --model deeplab_resnet34 --height 144 --width 192
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from benchmarks.provenance import git_state
from deploy.latency_table import format_latency_table, latency_table
from exporters.onnx_export import export_onnx
from exporters.quantize import quantize_int8
from pipeline.config import QuantizeConfig, load_config
from pipeline.data import build_dataset, iter_batches
from pipeline.models.multitask import task_channels
from pipeline.models.registry import create_model
from trainers.assembly import init_conv_weights_

OUT = Path(__file__).parent / "results" / "int8"


def _prune_(model: torch.nn.Module, target: float) -> None:
    """Zero the smallest `target` fraction of each prunable conv (classifiers stay dense, as by the default rules)."""
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, torch.nn.Conv2d) and "classifier" not in name:
                k = int(target * m.weight.numel())
                if k:
                    cut = m.weight.abs().flatten().kthvalue(k).values
                    m.weight.mul_(m.weight.abs() > cut)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="deeplab_resnet34")
    p.add_argument("--height", type=int, default=144)
    p.add_argument("--width", type=int, default=192)
    p.add_argument("--target", type=float, default=0.9)
    p.add_argument("--calibration", type=int, default=16)
    # untrained weights give activations too narrow for the histogram calibrators: min/max is what works here
    p.add_argument("--method", default="minmax", choices=["minmax", "entropy", "percentile"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--work", default=".cache/int8_latency")
    args = p.parse_args(argv)
    cfg = load_config("demo", [f"data.height={args.height}", f"data.width={args.width}", "data.num_train=64"])
    work = Path(args.work) / f"{args.model}_{args.height}x{args.width}"
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = create_model(args.model, task_channels(cfg.tasks, cfg.data.num_classes)).eval()
    init_conv_weights_(model, "normal001", 0)
    x = torch.rand(1, 3, args.height, args.width)
    paths = {"dense_fp32": work / "dense.onnx", "pruned_fp32": work / "pruned.onnx", "pruned_int8": work / "int8.onnx"}
    export_onnx(model, paths["dense_fp32"], task_names=list(cfg.tasks), example_input=x)
    _prune_(model, args.target)
    export_onnx(model, paths["pruned_fp32"], task_names=list(cfg.tasks), example_input=x)
    train = build_dataset(cfg.data, "train", list(cfg.tasks))
    images = np.concatenate([b["image"].numpy() for b in iter_batches(train, 8, limit=args.calibration)])
    q = QuantizeConfig()
    quantize_int8(paths["pruned_fp32"], paths["pruned_int8"], images, method=args.method,
                  activation_type=q.activation_type, percentile=q.percentile)
    table = latency_table(paths, [3, args.height, args.width], rounds=args.rounds, iters_per_round=args.iters)
    table["settings"] |= {"model": args.model, "height": args.height, "width": args.width, "target": args.target,
                          "weights": "init N(0, 0.01), per-layer magnitude pruning", "calibration": args.method, **git_state()}
    OUT.mkdir(parents=True, exist_ok=True)
    stem = f"{args.model}_{args.height}x{args.width}"
    (OUT / f"{stem}.json").write_text(json.dumps(table, indent=2) + "\n")
    (OUT / f"{stem}.md").write_text(format_latency_table(table) + "\n")
    print(format_latency_table(table))


if __name__ == "__main__":
    main()
