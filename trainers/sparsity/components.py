"""Map each conv layer of a multitask model to a component (the backbone or one task head) by ordered rules.

A rule is `{"match": glob, "component": name | None}`; the first matching rule wins and `None` leaves the layer
dense. `{task}` in a rule expands to every head name of the model, so no task name is hard-coded
(method.md section 13, defect 4). The rule that matched each layer is reported in sparsity.json.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

from torch import nn

from pipeline.errors import ConfigError


@dataclass(frozen=True)
class LayerAssignment:
    name: str
    component: str | None  # None: left dense
    rule: str  # the rule that decided, as text
    numel: int
    shape: tuple[int, ...]


def _expand(rules: list[dict[str, Any]], tasks: list[str]) -> list[tuple[str, str | None, str]]:
    out: list[tuple[str, str | None, str]] = []
    for i, rule in enumerate(rules):
        if not isinstance(rule, dict) or "match" not in rule or set(rule) - {"match", "component"}:
            raise ConfigError(
                f"sparsity.rules[{i}] = {rule!r} must be a mapping with 'match' and 'component' (null = dense)"
            )
        match, comp = str(rule["match"]), rule.get("component")
        text = f"{match} -> {comp if comp is not None else 'dense'}"
        if "{task}" in match or (isinstance(comp, str) and "{task}" in comp):
            for t in tasks:
                c = comp.replace("{task}", t) if isinstance(comp, str) else comp
                out.append((match.replace("{task}", t), c, text))
        else:
            out.append((match, comp, text))
    return out


def assign_components(model: nn.Module, rules: list[dict[str, Any]]) -> list[LayerAssignment]:
    """Assign every plain Conv2d of `model` (in module order) to a component or to 'dense'."""
    tasks = list(getattr(model, "heads", {}).keys())
    expanded = _expand(rules, tasks)
    result = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Conv2d):
            continue
        comp, rule_text = None, "no rule matched (dense)"
        for pattern, c, text in expanded:
            if fnmatch.fnmatchcase(name, pattern):
                comp, rule_text = c, text
                break
        result.append(LayerAssignment(name, comp, rule_text, module.weight.numel(), tuple(module.weight.shape)))
    if not any(a.component for a in result):
        raise ConfigError(
            "no conv layer matched a prunable sparsity rule; check 'sparsity.rules' against the model's layer names"
        )
    return result


def components_of(assignments: list[LayerAssignment]) -> list[str]:
    """Component names in first-appearance order (backbone first for the default rules)."""
    seen: list[str] = []
    for a in assignments:
        if a.component is not None and a.component not in seen:
            seen.append(a.component)
    return seen
