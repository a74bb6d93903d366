"""The harden step as a library call: a train checkpoint in, a plain hardened model and its reports out.

Thresholds or masks are baked into plain convs, optionally projected onto 2:4 (and fine-tuned with the masks
fixed), batch norm is folded, and every layer is checked and described for `harden/sparsity.json`. With
`sparsity.structure: channel` the 2:4 step is replaced by compaction: the dropped channels are zeroed, BN is
folded and the convs shrink physically (the checkpoint's `channel_plan` rebuilds the smaller shapes).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pipeline.checkpoint import HardenedCheckpoint, TrainCheckpoint, load_model_state
from pipeline.config import RunConfig, config_from_dict
from pipeline.data import build_dataset
from pipeline.data.batching import iter_batches
from pipeline.errors import PipelineError
from pipeline.metrics.evaluate import evaluate
from pipeline.models.factory import example_image, rebuild_model
from pipeline.models.folding import fold_batchnorm_
from pipeline.nm_sparsity import nm_violations
from trainers.assembly import assemble_trainer, attach_method
from trainers.sparsity.base import SparsityMethod
from trainers.sparsity.harden import NMDecision, channel_compact_, harden_, nm_project_, summarize_decisions
from trainers.sparsity.magnitude import FixedMasks
from trainers.sparsity.methods import build_method

__all__ = ["HardenResult", "harden_checkpoint", "restore_method_model"]


@dataclasses.dataclass
class HardenResult:
    checkpoint: HardenedCheckpoint  # harden/model.pt
    report: dict[str, Any]  # harden/sparsity.json
    metrics: dict[str, Any]  # task metrics of the hardened model on the val split


def restore_method_model(ckpt: TrainCheckpoint, source: Path | str) -> tuple[nn.Module, SparsityMethod]:
    """Rebuild the soft/masked model of a train checkpoint: returns (model, method) ready for hardening."""
    cfg = config_from_dict(ckpt.config)
    model = rebuild_model(ckpt.model)
    method, _ = build_method(cfg.sparsity, cfg.train.steps)
    attach_method(method, model, cfg)
    load_model_state(model, ckpt.state_dict, source)
    if ckpt.method["name"] != method.name:
        raise PipelineError(f"{source}: method {ckpt.method['name']} does not match its config ({method.name})")
    method.load_state_dict(ckpt.method["state"])  # sets the final thresholds / masks on the layers
    model.eval()
    return model, method


def _max_diff(a: dict[str, Tensor], b: dict[str, Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _finetune(cfg: RunConfig, model: nn.Module, layer_names: list[str], masks: dict[str, Tensor],
              progress: bool) -> dict[str, Any]:
    """Masked fine-tune with the one training loop; the masks never change (zeros stay zeros)."""
    steps = cfg.harden.finetune_steps
    train_set = build_dataset(cfg.data, "train", cfg.tasks)
    method = FixedMasks(cfg.sparsity, steps, masks)
    method.name = "finetune_2:4"
    tcfg = dataclasses.replace(cfg.train, seed=cfg.train.seed + 1, checkpoint_every=0)
    trainer = assemble_trainer(cfg, model, train_set, method=method, weighting="static", train=tcfg,
                               lr=cfg.harden.finetune_lr, steps=steps)
    zeros_before = sum(int((m == 0).sum()) for m in masks.values())
    trainer.run(progress=progress)
    harden_(method)
    zeros_after = sum(int((dict(model.named_modules())[n].weight == 0).sum()) for n in layer_names)
    if zeros_after < zeros_before:
        raise RuntimeError(f"fine-tuning revived weights: {zeros_before} zeros before, {zeros_after} after")
    return {"steps": steps, "lr": cfg.harden.finetune_lr, "zeros_before": zeros_before, "zeros_after": zeros_after}


def _project(cfg: RunConfig, model: nn.Module, layer_names: list[str], learned: dict[str, float],
             progress: bool) -> tuple[list[NMDecision], dict[str, Any] | None]:
    """2:4 / adaptive-2:4 projection (and the masked fine-tune); no-op for the unstructured pattern."""
    hcfg = cfg.harden
    if hcfg.pattern not in ("2:4", "adaptive-2:4"):
        return [], None
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
    finetune = _finetune(cfg, model, layer_names, masks, progress) if hcfg.finetune_steps > 0 else None
    return decisions, finetune


def _fold(model: nn.Module, x: Tensor) -> tuple[list[str], float]:
    """Fold batch norm and measure how much the outputs moved (float rounding only)."""
    with torch.no_grad():
        before = model(x)
        folded = fold_batchnorm_(model)
        fold_diff = _max_diff(before, model(x))
    if fold_diff > 1e-3:
        raise RuntimeError(f"batch-norm folding changed outputs by {fold_diff:.2e}")
    return folded, fold_diff


def layer_report(method: SparsityMethod, model: nn.Module, decisions: list[NMDecision],
                 learned: dict[str, float]) -> list[dict[str, Any]]:
    """One entry per conv of the hardened model (pattern, sparsity, 2:4 eligibility); raises on a 2:4 violation."""
    modules = dict(model.named_modules())
    pattern_of = {d.name: d for d in decisions}
    layers, violations = [], {}
    for a in method.assignments:
        w = modules[a.name].weight.detach()
        d = pattern_of.get(a.name)
        base = "dense" if a.component is None or learned.get(a.name, 0) <= 0 else "unstructured"
        entry = {
            "name": a.name,
            "component": a.component,
            "rule": a.rule,
            "shape": list(w.shape),
            "pattern": d.pattern if d else base,
            "sparsity": float((w == 0).float().mean()),
            "eligible_2_4": d is not None and not d.reason.startswith("skipped"),
            "reason": d.reason if d else ("left dense by rule" if a.component is None else "unstructured"),
        }
        if entry["pattern"] == "2:4":
            entry["violations"] = v = nm_violations(w.cpu().numpy())
            if v:
                violations[a.name] = v
        layers.append(entry)
    if violations:
        raise RuntimeError(f"2:4 pattern violated after hardening in {violations}")
    return layers


def _component_sparsity(layers: list[dict[str, Any]], compacted: SparsityMethod | None = None
                        ) -> tuple[float, dict[str, float]]:
    """Overall and per-component zero fraction over the prunable layers, weighted by size.

    `compacted`: the method of a channel-compacted model; removed weights count as zeros of the dense layer
    (its assignments hold the dense sizes)."""
    dense = {a.name: a.numel for a in compacted.assignments} if compacted is not None else {}
    prunable = [e for e in layers if e["component"]]
    comps: dict[str, list[float]] = {}
    for e in prunable:
        numel = math.prod(e["shape"])
        size = dense.get(e["name"], numel)
        comps.setdefault(e["component"], [0.0, 0.0])
        comps[e["component"]][0] += e["sparsity"] * numel + (size - numel)
        comps[e["component"]][1] += size
    zeros, count = sum(z for z, _ in comps.values()), sum(n for _, n in comps.values())
    return zeros / max(count, 1), {c: z / n for c, (z, n) in comps.items()}


def harden_checkpoint(cfg: RunConfig, ckpt: TrainCheckpoint, source: Path | str, progress: bool = True,
                      source_name: str = "train/checkpoint.pt") -> HardenResult:
    """Harden the model of `ckpt` as `cfg.harden` asks, check it, evaluate it on the val split."""
    hcfg = cfg.harden
    model, method = restore_method_model(ckpt, source)
    learned = method.measure()["layers"]
    x = example_image(model, 2, cfg.data.height, cfg.data.width)
    with torch.no_grad():
        y_soft = model(x)
    layer_names = list(harden_(method))
    model.eval()
    plan, channels = None, None
    if cfg.sparsity.structure == "channel":
        decisions, finetune = [], None
        components = {a.name: a.component for a in method.assignments if a.component is not None}
        plan, folded, fold_diff, channels = channel_compact_(model, method, x, _fold if hcfg.fold_bn else None,
                                                             components, multiple=hcfg.channel_multiple)
        # the trained model gates removed channels after their BN; only the compacted model computes the same
        # (harden_ drops the gates, so the plain dense model in between still carries their BN bias)
        with torch.no_grad():
            soft_vs_hard = _max_diff(y_soft, model(x))
    else:
        with torch.no_grad():
            soft_vs_hard = _max_diff(y_soft, model(x))
        decisions, finetune = _project(cfg, model, layer_names, learned, progress)
        model.eval()
        folded, fold_diff = _fold(model, x) if hcfg.fold_bn else ([], 0.0)
    layers = layer_report(method, model, decisions, learned)
    if plan is not None:
        dense_shapes = {a.name: list(a.shape) for a in method.assignments}
        for e in layers:
            e["dense_shape"] = dense_shapes[e["name"]]
            if e["component"]:
                e["pattern"], e["reason"] = "channel", "channel pruned" if e["shape"] != e["dense_shape"] else "all kept"

    val_set = build_dataset(cfg.data, "val", cfg.tasks)
    metrics = evaluate(model, iter_batches(val_set, 32), cfg.task_kinds, val_set.num_classes)
    overall, components = _component_sparsity(layers, method if plan is not None else None)
    n_prunable = sum(1 for e in layers if e["component"])
    headline: dict[str, Any] = {"overall": overall, "components": components}
    if channels is not None:
        # the target is a MAC fraction: so is the headline (as in train/sparsity.json); weights removed are named
        headline = {"overall": channels["mac_fraction_removed"], "components": channels["component_mac_fractions"],
                    "overall_kind": "mac_fraction", "param_sparsity": overall, "param_components": components}
    report = {
        "pattern": hcfg.pattern,
        "target": ckpt.sparsity["target"],
        **headline,
        "trained_overall": ckpt.sparsity["overall"],
        "soft_vs_hardened_max_abs": soft_vs_hard,
        "bn_folded": folded,
        "bn_fold_max_abs": fold_diff,
        "pattern_counts": summarize_decisions(decisions) if decisions else {
            "channel" if plan is not None else "unstructured": n_prunable},
        "pattern_check": "passed",
        "finetune": finetune,
        **({"structure": "channel", "channels": channels} if channels is not None else {}),
        "layers": layers,
    }
    hardened = HardenedCheckpoint(
        model=ckpt.model, state_dict=model.state_dict(), bn_folded=folded, tasks=ckpt.tasks,
        num_classes=ckpt.num_classes, class_names=ckpt.class_names, data=ckpt.data, pattern=hcfg.pattern,
        two_four_layers=[e["name"] for e in layers if e["pattern"] == "2:4"],
        sparsity={k: v for k, v in report.items() if k != "layers"},
        source={"checkpoint": source_name, "method": ckpt.method["name"]}, channel_plan=plan,
    )
    return HardenResult(checkpoint=hardened, report=report, metrics=metrics)
