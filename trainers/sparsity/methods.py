"""Registry of pruning methods. Each entry is a sparsity rule plus the task weighting it prescribes.

Adding a method is one entry here plus, if it needs a new rule, one `SparsityMethod` subclass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pipeline.config import SparsityConfig
from pipeline.errors import ConfigError
from trainers.sparsity.adapmtl import FaithfulSoftThresholds, SoftThresholds
from trainers.sparsity.base import SparsityMethod
from trainers.sparsity.disparse import DiSparseStatic
from trainers.sparsity.magnitude import MagnitudePruning


class DenseTraining(SparsityMethod):
    """No pruning; still wraps layers so sparsity is measured and reported the same way."""

    name = "dense"


@dataclass(frozen=True)
class MethodSpec:
    build: Callable[[SparsityConfig, int], SparsityMethod]
    weighting: str  # "static" | "adaptive"
    description: str


METHODS: dict[str, MethodSpec] = {
    "dense": MethodSpec(DenseTraining, "static", "no pruning (the reference)"),
    "adapmtl": MethodSpec(
        lambda c, t: SoftThresholds(c, t, "hierarchical", "marginal"),
        "adaptive",
        "AdapMTL, improved: per-component scale-invariant soft thresholds refined per layer, learned split, "
        "exact target",
    ),
    "adapmtl_component": MethodSpec(
        lambda c, t: SoftThresholds(c, t, "component", "marginal"),
        "adaptive",
        "AdapMTL at the paper's granularity: one learned threshold per component, no per-layer refinement",
    ),
    "adapmtl_static": MethodSpec(
        lambda c, t: SoftThresholds(c, t, "hierarchical", "marginal"),
        "static",
        "AdapMTL without adaptive task weighting (ablation)",
    ),
    "adapmtl_faithful": MethodSpec(
        FaithfulSoftThresholds,
        "adaptive",
        "AdapMTL as in the official code: sigmoid thresholds, Adam + decay, freeze at ratio",
    ),
    "soft_uniform": MethodSpec(
        lambda c, t: SoftThresholds(c, t, "component", "none"),
        "adaptive",
        "control: soft thresholds on the schedule, nothing learned per component",
    ),
    "str": MethodSpec(
        lambda c, t: SoftThresholds(c, t, "layer", "marginal"),
        "static",
        "STR-style: one learned threshold per layer, same controller",
    ),
    "gmp_global": MethodSpec(
        lambda c, t: MagnitudePruning(c, t, "global"), "static", "gradual global magnitude pruning"
    ),
    "gmp_uniform": MethodSpec(
        lambda c, t: MagnitudePruning(c, t, "uniform"), "static", "gradual magnitude pruning, same rate per layer"
    ),
    "gmp_split": MethodSpec(
        lambda c, t: MagnitudePruning(c, t, "split"),
        "static",
        "control: gradual magnitude pruning given a learned per-component split",
    ),
    "disparse_static": MethodSpec(
        DiSparseStatic, "static", "DiSparse-static: per-task saliency at init, backbone kept if any task needs it"
    ),
}


def list_methods() -> list[str]:
    return list(METHODS)


def build_method(cfg: SparsityConfig, total_steps: int) -> tuple[SparsityMethod, MethodSpec]:
    spec = METHODS.get(cfg.method)
    if spec is None:
        raise ConfigError(f"unknown sparsity method '{cfg.method}' (available: {', '.join(METHODS)})")
    method = spec.build(cfg, total_steps)
    method.name = cfg.method
    return method, spec
