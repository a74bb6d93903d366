"""sparsity.json: overall, per component and per layer sparsity, thresholds, and the rule that matched."""

from __future__ import annotations

from typing import Any

from trainers.sparsity.base import SparsityMethod


def sparsity_report(method: SparsityMethod) -> dict[str, Any]:
    m = method.measure()
    layer_info = []
    comp_params: dict[str, int] = {c: 0 for c in method.components}
    dense_params = 0
    for a in method.assignments:
        entry = {
            "name": a.name,
            "component": a.component,
            "rule": a.rule,
            "shape": list(a.shape),
            "params": a.numel,
            "sparsity": m["layers"].get(a.name, 0.0) if a.component else 0.0,
        }
        layer_info.append(entry)
        if a.component:
            comp_params[a.component] += a.numel
        else:
            dense_params += a.numel
    target = method.cfg.target if method.name != "dense" else 0.0
    total_all = m["prunable_params"] + dense_params
    zeros = m["overall"] * m["prunable_params"]
    channel = {}
    if "channels" in m:  # channel structure: overall/components are MAC fractions; parameters counted apart
        zeros = m["channels"]["param_fraction_all_convs"] * total_all
        channel = {
            "structure": "channel",
            "param_sparsity": m["param_sparsity"],
            "param_components": m["param_components"],
            "channels": m["channels"],
        }
    return {
        "method": method.name,
        "target": target,
        "overall": m["overall"],
        "overshoot": m["overall"] - target,
        "components": m["components"],
        "component_params": comp_params,
        "thresholds": method.thresholds(),
        "threshold_kind": method.threshold_kind,
        "prunable_params": m["prunable_params"],
        "dense_params": dense_params,
        "overall_all_convs": zeros / max(total_all, 1),
        "layers": layer_info,
        **channel,
    }
