"""The demo model's export variants: weights (briefly trained, initial, hardened AdapMTL), the pruning
pattern, BN folding as the harden stage does it, and the ONNX export as the export stage does it."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from exporters.onnx_export import export_onnx
from exporters.simplify import simplify_onnx
from pipeline.checkpoint import TrainCheckpoint, read_checkpoint
from pipeline.config import load_config
from pipeline.models.folding import fold_batchnorm_
from trainers.assembly import build_model
from trainers.hardening import restore_method_model
from trainers.sparsity.components import assign_components
from trainers.sparsity.harden import harden_, nm_project_, summarize_decisions
from trainers.sparsity.methods import build_method
from trainers.training_run import train_run, training_fingerprint


def prunable_layer_names(model, rules) -> list[str]:
    return [a.name for a in assign_components(model, rules) if a.component is not None]


def _prune_(model, cfg, names: list[str], pattern: str) -> dict[str, Any]:
    """Prune `model` in place to `pattern`; returns the 2:4 decisions (empty for the other patterns)."""
    info: dict[str, Any] = {}
    if pattern == "unstructured":
        method, _ = build_method(dataclasses.replace(cfg.sparsity, method="gmp_global"), 1)
        method.attach(model)
        method.finalize()  # masks at exactly the target (one global magnitude cut)
        harden_(method)
    elif pattern == "2:4":
        decisions, _ = nm_project_(model, names, {}, "2:4")
        info["decisions"] = summarize_decisions(decisions)
        info["skipped"] = {d.name: d.reason for d in decisions if d.pattern != "2:4"}
    elif pattern != "dense":
        raise ValueError(f"unknown pattern {pattern}")
    return info


def build_variant(cfg, num_classes: int, state_dict: dict[str, Tensor], pattern: str):
    """The demo model with `state_dict`, pruned to `pattern`, hardened and BN-folded (the harden stage's steps).

    pattern: "dense", "unstructured" (global magnitude to `cfg.sparsity.target` over the prunable convs, the
    `gmp_global` method's cut) or "2:4" (`nm_mask` on every eligible prunable conv via `nm_project_`).
    """
    model = build_model(cfg, num_classes)
    model.load_state_dict(state_dict)
    names = prunable_layer_names(model, cfg.sparsity.rules)
    info: dict[str, Any] = {"pattern": pattern, **_prune_(model, cfg, names, pattern)}
    model.eval()
    with torch.no_grad():
        x = model.example_inputs(batch=2, height=cfg.data.height, width=cfg.data.width)[0]
        before = model(x)
        info["bn_folded"] = len(fold_batchnorm_(model))
        after = model(x)
    info["fold_max_diff"] = max(float((before[k] - after[k]).abs().max()) for k in before)
    info.update(zero_stats(model, names))
    return model, info


def zero_stats(model, prunable: Sequence[str]) -> dict[str, Any]:
    modules = dict(model.named_modules())
    pz = sum(int((modules[n].weight == 0).sum()) for n in prunable)
    pn = sum(modules[n].weight.numel() for n in prunable)
    params = sum(p.numel() for p in model.parameters())
    zeros = sum(int((p == 0).sum()) for p in model.parameters())
    return {
        "prunable_weights": pn,
        "prunable_sparsity": pz / max(pn, 1),
        "params": params,
        "param_sparsity": zeros / max(params, 1),
    }


def export_variant(model, path: Path, cfg, exporter: str = "dynamo", simplifier: str = "onnxsim") -> dict[str, Any]:
    """`export_onnx` + `simplify_onnx` as the export stage does; returns the export facts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = path.with_name(path.stem + ".raw.onnx")
    example = model.example_inputs(batch=2, height=cfg.data.height, width=cfg.data.width)[0]
    info = export_onnx(model, raw, task_names=list(cfg.tasks), example_input=example, exporter=exporter)
    simp = simplify_onnx(raw, path, tool=simplifier)
    raw.unlink()
    return {"exporter": info.exporter, "opset": info.opset, "simplifier": simp["tool"], "nodes": simp["nodes_after"]}


def trained_checkpoint(work: Path, method: str, steps: int, threads: int, log: Callable[[str], None]) -> Path:
    """Train the demo preset briefly with `train_run` (cached in `work`); returns checkpoint.pt."""
    overrides = [
        "dense_reference=null",
        f"sparsity.method={method}",
        "sparsity.target=0.9",
        f"train.steps={steps}",
        f"train.num_threads={threads}",
        "train.checkpoint_every=0",
    ]
    cfg = load_config("demo", overrides)
    fingerprint = training_fingerprint(cfg)  # the resolved config: a changed preset retrains
    out = work / f"train_{method}_{steps}"
    ckpt = out / "checkpoint.pt"
    stamp = out / "fingerprint.txt"
    if ckpt.exists() and stamp.exists() and stamp.read_text() == fingerprint:
        log(f"  reusing {ckpt}")
        return ckpt
    out.mkdir(parents=True, exist_ok=True)
    (out / "resume.pt").unlink(missing_ok=True)
    t0 = time.perf_counter()
    res = train_run(cfg, out, progress=False)
    log(f"  trained {method} for {steps} steps in {time.perf_counter() - t0:.0f} s "
        f"(sparsity {res['sparsity']['overall']:.3f})")
    (out / "result.json").write_text(json.dumps({k: res[k] for k in ("metrics", "steps", "train_seconds")}, default=str))
    stamp.write_text(fingerprint)
    return ckpt


def adapmtl_hardened(ckpt_path: Path):
    """The hardened AdapMTL model of a train checkpoint (shrunk survivors), BN-folded, and its zero stats."""
    ckpt = read_checkpoint(ckpt_path, TrainCheckpoint)
    model, method = restore_method_model(ckpt, ckpt_path)
    names = list(method.layers)
    harden_(method)
    model.eval()
    fold_batchnorm_(model)
    return model, {"pattern": "unstructured (AdapMTL, hardened: sign(W)(|W|-tau))", **zero_stats(model, names)}
