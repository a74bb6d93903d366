"""Map each conv layer of a multitask model to a component (the backbone or one task head) by ordered rules.

A rule is `{"match": glob, "component": name | None}`; the first matching rule wins and `None` leaves the layer
dense. `{task}` in a rule expands to every configured task (default: the model's head names), so no task name is hard-coded
(method.md section 13, defect 4). The rule that matched each layer is reported in sparsity.json; layers no
rule matches stay dense and are listed there too. A rule that matches no conv is an error (a typo would
otherwise silently leave layers dense).
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


def _expand(rules: list[dict[str, Any]], tasks: list[str]) -> list[tuple[str, str | None, str, int]]:
    """(pattern, component, rule text, rule index) per rule, `{task}` rules once per task."""
    out: list[tuple[str, str | None, str, int]] = []
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
                out.append((match.replace("{task}", t), c, text, i))
        else:
            out.append((match, comp, text, i))
    return out


def _check_coverage(
    names: list[str], expanded: list[tuple[str, str | None, str, int]], rules: list[dict[str, Any]],
    tasks: list[str], result: list[LayerAssignment],
) -> None:
    """Every rule matches some conv, and every configured task owns a layer when a `{task}` rule names it."""
    for i, rule in enumerate(rules):
        if not any(fnmatch.fnmatchcase(n, p) for p, _, _, j in expanded if j == i for n in names):
            raise ConfigError(
                f"sparsity.rules[{i}] match {rule['match']!r} matches no conv layer of the model "
                f"(layers look like {', '.join(names[:3])}); fix or remove the rule"
            )
    per_task = [c for _, c, _, _ in expanded if isinstance(c, str) and c in tasks]
    owned = {a.component for a in result}
    for t in tasks:
        if t in per_task and t not in owned:
            raise ConfigError(
                f"task '{t}' gets no prunable layer from 'sparsity.rules' (its per-task rule matches none of its "
                "layers, or an earlier rule takes them); name its layers in a rule"
            )


def assign_components(
    model: nn.Module, rules: list[dict[str, Any]], tasks: list[str] | None = None
) -> list[LayerAssignment]:
    """Assign every plain Conv2d of `model` (in module order) to a component or to 'dense'.

    `tasks`: the configured task names `{task}` expands over (default: the model's `heads` keys).
    Raises ConfigError when a rule matches no conv, a configured task gets no layer from its `{task}` rule,
    or nothing at all is prunable.
    """
    tasks = list(tasks) if tasks is not None else list(getattr(model, "heads", {}).keys())
    expanded = _expand(rules, tasks)
    result = []
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Conv2d):
            continue
        names.append(name)
        comp, rule_text = None, "no rule matched (dense)"
        for pattern, c, text, _ in expanded:
            if fnmatch.fnmatchcase(name, pattern):
                comp, rule_text = c, text
                break
        result.append(LayerAssignment(name, comp, rule_text, module.weight.numel(), tuple(module.weight.shape)))
    _check_coverage(names, expanded, rules, tasks, result)  # first: it names the rule or task at fault
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
