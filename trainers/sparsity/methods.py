"""Registry of pruning methods. Each entry is a sparsity rule plus the task weighting it prescribes.

Adding a method is one entry here plus, if it needs a new rule, one `SparsityMethod` subclass.

`sparsity.structure` selects the implementation: `unstructured` prunes weights (`MethodSpec.build`), `channel`
prunes whole filters (`MethodSpec.channel`, trainers/sparsity/channel.py). A method with no implementation for
the configured structure is a one-line ConfigError that lists the methods that have one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from pipeline.config import SparsityConfig
from pipeline.errors import ConfigError
from trainers.sparsity.adapmtl import SoftThresholds
from trainers.sparsity.base import SparsityMethod
from trainers.sparsity.channel import ChannelDense, ChannelMasks, ChannelSoftThresholds
from trainers.sparsity.disparse import DiSparseStatic, Snip
from trainers.sparsity.disparse_dynamic import DiSparseDynamic
from trainers.sparsity.magnitude import IterativeMagnitudePruning, MagnitudePruning
from trainers.sparsity.sigmoid import FaithfulSoftThresholds, SigmoidLayerThresholds


class DenseTraining(SparsityMethod):
    """No pruning; still wraps layers so sparsity is measured and reported the same way."""

    name = "dense"


Builder = Callable[[SparsityConfig, int], SparsityMethod]


def _channel_soft(granularity: str, allocation: str) -> Builder:
    return lambda c, t: ChannelSoftThresholds(c, t, granularity, allocation)


@dataclass(frozen=True)
class MethodSpec:
    build: Builder | None  # unstructured implementation (None: channel only)
    weighting: str  # "static" | "adaptive"
    description: str
    channel: Builder | None = None  # channel implementation (None: unstructured only)


_ADAPMTL = MethodSpec(
    lambda c, t: SoftThresholds(c, t, "layer", "marginal"),
    "static",
    "AdapMTL, improved: scale-invariant soft thresholds, one per layer, grouped by component (bounds, report); "
    "split learned from the marginal loss per pruned weight, exact target; static task weights. Per-layer "
    "replaced the component level plus per-layer refinement in 0.5: better on dev (docs/benchmarks.md)",
    channel=_channel_soft("layer", "marginal"),
)

METHODS: dict[str, MethodSpec] = {
    "dense": MethodSpec(DenseTraining, "static", "no pruning (the reference)", ChannelDense),
    "adapmtl": _ADAPMTL,
    "adapmtl_adaptive": replace(
        _ADAPMTL, weighting="adaptive",
        description="adapmtl with the paper's adaptive task weighting (option; before 0.3 this was 'adapmtl')",
    ),
    "adapmtl_hierarchical": MethodSpec(
        lambda c, t: SoftThresholds(c, t, "hierarchical", "marginal"),
        "static",
        "ablation: a learned threshold per component refined per layer (the default in 0.2-0.4)",
        channel=_channel_soft("hierarchical", "marginal"),
    ),
    "adapmtl_component": MethodSpec(
        lambda c, t: SoftThresholds(c, t, "component", "marginal"),
        "static",
        "ablation: one learned threshold per component (the paper's granularity), no per-layer refinement",
        channel=_channel_soft("component", "marginal"),
    ),
    # Kept so that configs and results written before 0.5 still name a method: identical to 'adapmtl' now.
    "adapmtl_static": replace(
        _ADAPMTL, description="alias of adapmtl (since 0.3 the default is static; kept for older configs)"
    ),
    "adapmtl_layer": replace(
        _ADAPMTL,
        description="alias of adapmtl (the per-layer ablation of 0.3-0.4 became the default in 0.5; kept for "
        "older configs)",
    ),
    "adapmtl_faithful": MethodSpec(
        FaithfulSoftThresholds,
        "adaptive",
        "AdapMTL as in the official code: sigmoid thresholds, one coupled decay, Adam (0.5, 0.999), StepLR, "
        "freeze at ratio",
    ),
    "soft_uniform": MethodSpec(
        lambda c, t: SoftThresholds(c, t, "component", "none"),
        "static",
        "control: soft thresholds on the schedule, nothing learned per component",
    ),
    "str": MethodSpec(
        SigmoidLayerThresholds,
        "static",
        "STR (Kusupati et al. 2020): per-layer sigmoid thresholds in weight units, learned with decay, no controller",
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
    "disparse_dynamic": MethodSpec(
        DiSparseDynamic, "static",
        "DiSparse dynamic: ERK-random sparse start, periodic magnitude prune and per-task gradient regrowth "
        "(backbone: union over tasks), fixed after the ramp",
    ),
    "snip": MethodSpec(Snip, "static", "SNIP: one-shot saliency |g*w| at initialisation, then fixed masks"),
    "channel_soft_uniform": MethodSpec(
        None,
        "static",
        "channel control: group soft thresholds on the MAC schedule, nothing learned per component",
        _channel_soft("component", "none"),
    ),
    "l1_uniform": MethodSpec(
        None,
        "static",
        "channel baseline: L1-norm filter pruning, the same channel rate in every group, gradual to the MAC target",
        lambda c, t: ChannelMasks(c, t, "uniform"),
    ),
    "l1_global": MethodSpec(
        None,
        "static",
        "channel baseline: L1-norm filter pruning, one global ranking (filter L1 / its group's mean), to the MAC target",
        lambda c, t: ChannelMasks(c, t, "global"),
    ),
    "imp": MethodSpec(
        IterativeMagnitudePruning, "static", "IMP with rewinding (LTH style): rounds of global magnitude pruning"
    ),
}


def list_methods() -> list[str]:
    return list(METHODS)


def methods_for(structure: str) -> list[str]:
    """The methods with an implementation for `sparsity.structure` (unstructured | channel)."""
    return [n for n, s in METHODS.items() if (s.channel if structure == "channel" else s.build) is not None]


def build_method(cfg: SparsityConfig, total_steps: int) -> tuple[SparsityMethod, MethodSpec]:
    spec = METHODS.get(cfg.method)
    if spec is None:
        raise ConfigError(f"unknown sparsity method '{cfg.method}' (available: {', '.join(METHODS)})")
    structure = cfg.structure
    build = spec.channel if structure == "channel" else spec.build
    if build is None and spec.build is None:
        raise ConfigError(
            f"sparsity.method={cfg.method} prunes whole channels: set sparsity.structure=channel, or use an "
            f"unstructured method ({', '.join(methods_for('unstructured'))})"
        )
    if build is None:
        raise ConfigError(
            f"sparsity.method={cfg.method} has no {structure} implementation; with sparsity.structure={structure} "
            f"use one of: {', '.join(methods_for(structure))}"
        )
    method = build(cfg, total_steps)
    method.name = cfg.method
    return method, spec
