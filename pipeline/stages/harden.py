"""harden stage: plain convs with baked-in sparse weights (unstructured, 2:4 or adaptive-2:4), BN folded."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from pipeline.artifacts import atomic_write_json
from pipeline.errors import PipelineError
from pipeline.stages.base import StageContext, StageRecord


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _finetune(ctx: StageContext, model, layer_names, masks) -> dict[str, Any]:
    """Masked fine-tune with the one training loop; the masks never change (zeros stay zeros)."""
    from pipeline.data import build_dataset
    from trainers.loop import Trainer
    from trainers.objectives import MultiTaskLoss
    from trainers.sparsity.harden import harden_
    from trainers.sparsity.magnitude import FixedMasks
    from trainers.weighting import StaticWeighting

    cfg = ctx.cfg
    steps = cfg.harden.finetune_steps
    train_set = build_dataset(cfg.data, "train", cfg.tasks)
    method = FixedMasks(cfg.sparsity, steps, masks)
    method.name = "finetune_2:4"
    method.attach(model)
    tcfg = dataclasses.replace(cfg.train, seed=cfg.train.seed + 1, checkpoint_every=0)
    trainer = Trainer(
        model, method, StaticWeighting(list(cfg.tasks), cfg.train.weighting.priority, cfg.train.weighting.normalise_losses),
        MultiTaskLoss(cfg.tasks, cfg.train.depth_loss), train_set, tcfg, lr=cfg.harden.finetune_lr, steps=steps,
    )
    zeros_before = sum(int((m == 0).sum()) for m in masks.values())
    trainer.run(progress=ctx.options.get("progress", True))
    harden_(method)
    zeros_after = sum(int((dict(model.named_modules())[n].weight == 0).sum()) for n in layer_names)
    if zeros_after < zeros_before:
        raise RuntimeError(f"fine-tuning revived weights: {zeros_before} zeros before, {zeros_after} after")
    return {"steps": steps, "lr": cfg.harden.finetune_lr, "zeros_before": zeros_before, "zeros_after": zeros_after}


def run(ctx: StageContext) -> StageRecord:
    from pipeline.checkpoint import load_checkpoint, save_checkpoint
    from pipeline.data import build_dataset
    from pipeline.metrics.evaluate import evaluate
    from trainers.session import restore_method_model
    from trainers.sparsity.harden import (
        fold_batchnorm_,
        harden_,
        nm_project_,
        nm_violations,
        summarize_decisions,
    )

    cfg, hcfg = ctx.cfg, ctx.cfg.harden
    src = ctx.run.path("train", "checkpoint.pt")
    ckpt = load_checkpoint(src, "train")
    model, method = restore_method_model(ckpt, src)
    learned = method.measure()["layers"]
    x = model.example_inputs(batch=2, height=cfg.data.height, width=cfg.data.width)[0]
    with torch.no_grad():
        y_soft = model(x)
    hardened = harden_(method)
    with torch.no_grad():
        soft_vs_hard = _max_diff(y_soft, model(x))
    layer_names = list(hardened)

    decisions, finetune = [], None
    if hcfg.pattern in ("2:4", "adaptive-2:4"):
        decisions, masks = nm_project_(
            model, layer_names, learned, hcfg.pattern, hcfg.min_channels, hcfg.adaptive_min_sparsity
        )
        if not any(d.pattern == "2:4" for d in decisions):
            raise PipelineError(
                f"harden.pattern={hcfg.pattern}: no layer is eligible for 2:4 (needs in-channels % "
                f"{hcfg.min_channels} == 0, out-channels % 8 == 0, groups == 1"
                + (f", learned sparsity >= {hcfg.adaptive_min_sparsity}" if hcfg.pattern == "adaptive-2:4" else "")
                + "); use harden.pattern=unstructured or change the model"
            )
        if hcfg.finetune_steps > 0:
            finetune = _finetune(ctx, model, layer_names, masks)
    model.eval()
    folded: list[str] = []
    fold_diff = 0.0
    if hcfg.fold_bn:
        with torch.no_grad():
            before = model(x)
            folded = fold_batchnorm_(model)
            fold_diff = _max_diff(before, model(x))
        if fold_diff > 1e-3:
            raise RuntimeError(f"batch-norm folding changed outputs by {fold_diff:.2e}")

    modules = dict(model.named_modules())
    pattern_of = {d.name: d for d in decisions}
    layers, violations = [], {}
    for a in method.assignments:
        w = modules[a.name].weight.detach()
        d = pattern_of.get(a.name)
        pattern = d.pattern if d else ("dense" if a.component is None else ("unstructured" if learned.get(a.name, 0) > 0 else "dense"))
        entry = {
            "name": a.name,
            "component": a.component,
            "rule": a.rule,
            "shape": list(w.shape),
            "pattern": pattern,
            "sparsity": float((w == 0).float().mean()),
            "eligible_2_4": d is not None and not d.reason.startswith("skipped"),
            "reason": d.reason if d else ("left dense by rule" if a.component is None else "unstructured"),
        }
        if pattern == "2:4":
            v = nm_violations(w)
            entry["violations"] = v
            if v:
                violations[a.name] = v
        layers.append(entry)
    if violations:
        raise RuntimeError(f"2:4 pattern violated after hardening in {violations}")

    val_set = build_dataset(cfg.data, "val", cfg.tasks)
    loader = torch.utils.data.DataLoader(val_set, batch_size=32)
    metrics = evaluate(model, loader, list(cfg.tasks), val_set.num_classes)

    prunable = [e for e in layers if e["component"]]
    total = sum(e["sparsity"] * _numel(e["shape"]) for e in prunable)
    count = sum(_numel(e["shape"]) for e in prunable)
    comps: dict[str, list[float]] = {}
    for e in prunable:
        comps.setdefault(e["component"], [0.0, 0.0])
        comps[e["component"]][0] += e["sparsity"] * _numel(e["shape"])
        comps[e["component"]][1] += _numel(e["shape"])
    report = {
        "pattern": hcfg.pattern,
        "target": ckpt["sparsity"]["target"],
        "overall": total / max(count, 1),
        "components": {c: z / n for c, (z, n) in comps.items()},
        "trained_overall": ckpt["sparsity"]["overall"],
        "soft_vs_hardened_max_abs": soft_vs_hard,
        "bn_folded": folded,
        "bn_fold_max_abs": fold_diff,
        "pattern_counts": summarize_decisions(decisions) if decisions else {"unstructured": len(prunable)},
        "pattern_check": "passed",
        "finetune": finetune,
        "layers": layers,
    }
    atomic_write_json(ctx.out / "sparsity.json", report)
    atomic_write_json(ctx.out / "metrics.json", {"metrics": metrics, "trained_metrics_source": "train/metrics.json"})
    save_checkpoint(
        ctx.out / "model.pt",
        "hardened",
        {
            "model": ckpt["model"],
            "state_dict": model.state_dict(),
            "bn_folded": folded,
            "tasks": ckpt["tasks"],
            "num_classes": ckpt["num_classes"],
            "class_names": ckpt["class_names"],
            "data": ckpt["data"],
            "pattern": hcfg.pattern,
            "two_four_layers": [e["name"] for e in layers if e["pattern"] == "2:4"],
            "sparsity": {k: v for k, v in report.items() if k != "layers"},
            "source": {"checkpoint": "train/checkpoint.pt", "method": ckpt["method"]["name"]},
        },
    )
    return StageRecord(
        outputs=["model.pt", "sparsity.json", "metrics.json"],
        summary={"pattern": hcfg.pattern, "overall": report["overall"], "components": report["components"],
                 "soft_vs_hardened_max_abs": soft_vs_hard, "metrics": metrics},
    )


def _numel(shape: list[int]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n

