"""Hardening primitives: bake thresholds or masks into plain convs, project to NVIDIA's 2:4 pattern.

- Unstructured: W_hard = sign(W) * max(|W| - tau, 0) (the shrunk values, never W * mask: method.md section 6).
- 2:4: in every group of 4 consecutive *input channels* of a `[K, C, R, S]` conv weight, for each (k, r, s),
  at most 2 nonzeros (the axis TensorRT and `polygraphy inspect sparsity` check; peers.md 2.1). The 2 largest
  magnitudes survive. Layers TensorRT cannot run sparse are left as they are, with the reason recorded.
- Channels (`sparsity.structure: channel`): the channels the method drops are zeroed, BN is folded, and the convs
  are compacted physically (`channel_compact_`, on `pipeline.models.channels`).
The 2:4 check is `pipeline.nm_sparsity.nm_violations`, BN folding `pipeline.models.folding.fold_batchnorm_`;
`trainers.hardening` strings these steps together.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from pipeline.errors import PipelineError
from pipeline.models.channels import (
    channel_groups,
    compact_,
    conv_macs,
    kept_from_mask,
    planned_macs,
    zero_channels_,
)
from trainers.sparsity.base import SparsityMethod
from trainers.sparsity.layers import SparseConv2d, make_plain_


@torch.no_grad()
def harden_(method: SparsityMethod) -> dict[str, Tensor]:
    """Replace each sparse layer by a plain Conv2d holding its effective weight. Idempotent.

    Returns the hardened weights by layer name. Thresholds and masks are no longer applied afterwards.
    """
    out = {}
    for name, layer in method.layers.items():
        if not isinstance(layer, SparseConv2d):
            continue  # already hardened
        w = layer.effective_weight().detach().clone()
        make_plain_(layer)
        layer.weight.copy_(w)
        out[name] = w
    return out


def nm_mask(weight: Tensor, n: int = 2, m: int = 4) -> Tensor:
    """Keep mask with the `n` largest |w| in every group of `m` along dim 1 (input channels).

    Ties keep the lower channel index (deterministic). Requires `weight.shape[1] % m == 0`.
    """
    if weight.dim() < 2 or weight.shape[1] % m:
        raise ValueError(f"2:4 needs the input-channel count to be a multiple of {m}, got shape {tuple(weight.shape)}")
    w = weight.detach().abs().movedim(1, -1)  # [K, R, S, C]
    groups = w.reshape(*w.shape[:-1], w.shape[-1] // m, m)
    idx = groups.topk(n, dim=-1, sorted=False).indices
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, idx, True)
    # never "keep" an exact zero over a nonzero: topk already prefers larger magnitudes
    return keep.reshape(w.shape).movedim(-1, 1)


def nm_eligibility(conv: nn.Conv2d, min_channels: int = 16) -> tuple[bool, str]:
    """Whether TensorRT can run this conv with sparse kernels, and why not (ASP/ModelOpt rules: K%8, C%16)."""
    k, c = conv.out_channels, conv.in_channels // conv.groups
    if conv.groups != 1:
        return False, f"grouped/depthwise conv (groups={conv.groups})"
    if c % min_channels:
        return False, f"{c} input channels, not a multiple of {min_channels}"
    if k % 8:
        return False, f"{k} output channels, not a multiple of 8"
    return True, "eligible"


@dataclass
class NMDecision:
    name: str
    pattern: str  # "2:4" | "unstructured" | "dense"
    reason: str


@torch.no_grad()
def nm_project_(
    model: nn.Module,
    layer_names: list[str],
    learned_sparsity: dict[str, float],
    mode: str,
    min_channels: int = 16,
    adaptive_min_sparsity: float = 0.5,
) -> tuple[list[NMDecision], dict[str, Tensor]]:
    """Project chosen conv layers of a hardened plain model onto 2:4 in place.

    `mode` "2:4": every eligible layer. "adaptive-2:4": only eligible layers whose learned sparsity is at least
    `adaptive_min_sparsity`; the sensitive (denser) ones keep their unstructured hardened weights.
    Returns the decisions and a keep-mask per layer (True where a weight may be nonzero) for fine-tuning.
    """
    modules = dict(model.named_modules())
    decisions, masks = [], {}
    for name in layer_names:
        conv = modules[name]
        ok, why = nm_eligibility(conv, min_channels)
        learned = learned_sparsity.get(name, 0.0)
        base_pattern = "unstructured" if learned > 0 else "dense"
        if not ok:
            decisions.append(NMDecision(name, base_pattern, f"skipped: {why}"))
        elif mode == "adaptive-2:4" and learned < adaptive_min_sparsity:
            decisions.append(
                NMDecision(name, base_pattern, f"kept: learned sparsity {learned:.2f} < {adaptive_min_sparsity:.2f}")
            )
        else:
            keep = nm_mask(conv.weight)
            conv.weight.mul_(keep)
            decisions.append(NMDecision(name, "2:4", "2:4 applied"))
        masks[name] = conv.weight != 0
    return decisions, masks


def summarize_decisions(decisions: list[NMDecision]) -> dict[str, Any]:
    """How many layers got each pattern."""
    counts: dict[str, int] = {}
    for d in decisions:
        counts[d.pattern] = counts.get(d.pattern, 0) + 1
    return counts


# -- channel pruning ------------------------------------------------------------------------------------------


def _param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _component_mac_fractions(dense: dict[str, int], compact: dict[str, int], components: dict[str, str]
                             ) -> dict[str, float]:
    """Per component, the MACs compaction removed from its convs / their dense MACs (conv names survive
    compaction; a dense-by-rule conv counts only in the overall fraction, as in `ChannelSpace`)."""
    out: dict[str, list[float]] = {}
    for name, comp in components.items():
        if name in dense:
            acc = out.setdefault(comp, [0.0, 0.0])
            acc[0] += compact.get(name, 0)
            acc[1] += dense[name]
    return {c: 1.0 - kept / total if total > 0 else 0.0 for c, (kept, total) in out.items()}


def round_up_kept(kept: list[int], size: int, multiple: int) -> list[int]:
    """`kept` plus the lowest-numbered removed channels until its length is a multiple of `multiple` (or `size`)."""
    want = min(size, -(-len(kept) // multiple) * multiple)
    if want <= len(kept):
        return kept
    chosen = set(kept)
    extra = [i for i in range(size) if i not in chosen][: want - len(kept)]
    return sorted(kept + extra)


@torch.no_grad()
def channel_compact_(
    model: nn.Module,
    method: SparsityMethod,
    x: Tensor,
    fold: Callable[[nn.Module, Tensor], tuple[list[str], float]] | None,
    components: dict[str, str] | None = None,
    multiple: int = 1,
) -> tuple[dict[str, list[int]], list[str], float, dict[str, Any]]:
    """Harden = compact: zero the channels `method.channel_keep()` drops, fold BN (`fold`), remove them physically.

    `multiple` > 1 rounds each pruned group's kept count up to a multiple of it (at most the group's size) by
    keeping some removed channels as all-zero channels: the outputs are unchanged, the MACs rise a little, and
    runtimes whose fast conv kernels need blocked channel counts (ONNX Runtime's NCHWc convs on x86: multiples of
    8 with AVX2, 16 with AVX-512; tensor cores) can use them (docs/cost.md has the measurement).

    `model` holds plain hardened convs (after `harden_`). Returns the channel plan (kept indices per group, every
    prunable group listed), the folded conv names, the fold's output change and the `channels` report section.
    Raises RuntimeError when the compacted model's outputs differ from the zeroed model's beyond fp32 rounding.
    """
    keep_fn = getattr(method, "channel_keep", None)
    if not callable(keep_fn):
        raise PipelineError(f"sparsity method '{method.name}' gives no channel plan (channel_keep); "
                            "use a channel method or sparsity.structure=unstructured")
    keep = {name: kept_from_mask(k) if isinstance(k, Tensor) and k.dtype == torch.bool
            else torch.as_tensor(k, dtype=torch.int64).reshape(-1) for name, k in keep_fn().items()}
    prunable = {a.name for a in method.assignments if a.component is not None}
    components = components if components is not None else {a.name: a.component for a in method.assignments
                                                              if a.component is not None}
    groups = channel_groups(model, x, prunable)
    macs = conv_macs(model, x)
    dense_macs, dense_params = sum(macs.values()), _param_count(model)
    zero_channels_(model, groups, keep)
    y_zeroed = model(x)
    folded, fold_diff = fold(model, x) if fold is not None else ([], 0.0)
    by_name = {g.name: g for g in groups}
    trained = {name: sorted(int(i) for i in k.tolist()) for name, k in keep.items()}
    plan = {name: round_up_kept(kept, by_name[name].size, multiple) if name in by_name else kept
            for name, kept in trained.items()}
    trained_macs = planned_macs(model, groups, macs, {n: len(k) for n, k in trained.items()})
    compact_(model, x, plan)
    y_compact = model(x)
    diff = max(float((y_zeroed[k] - y_compact[k]).abs().max() / y_zeroed[k].abs().max().clamp_min(1.0))
               for k in y_zeroed)
    if diff > 1e-4:
        raise RuntimeError(f"channel compaction changed outputs by {diff:.2e} (relative): the model's channel "
                           "coupling was not resolved exactly")
    compact_per_conv = conv_macs(model, x)
    compact_macs = sum(compact_per_conv.values())
    report = {
        "groups": [
            {"name": g.name, "convs": list(g.convs), "kept": len(plan.get(g.name, range(g.size))), "total": g.size,
             "kept_nonzero": len(trained.get(g.name, range(g.size))), "macs_per_channel": g.macs_per_channel}
            | ({} if g.prunable else {"reason": g.reason})
            for g in groups if g.prunable or g.name in plan
        ],
        "kept_channels": sum(len(v) for v in plan.values()),
        "total_channels": sum(by_name[n].size for n in plan),
        "macs_dense": dense_macs,
        "macs_compact": compact_macs,
        "mac_fraction_removed": 1.0 - compact_macs / max(dense_macs, 1),
        "channel_multiple": multiple,
        "mac_fraction_removed_before_rounding": 1.0 - float(trained_macs) / max(dense_macs, 1),
        "component_mac_fractions": _component_mac_fractions(macs, compact_per_conv, components),
        "params_dense": dense_params,
        "params_compact": _param_count(model),
        "param_fraction_removed": 1.0 - _param_count(model) / max(dense_params, 1),
        "input_hw": list(x.shape[-2:]),
        "compact_vs_zeroed_max_rel": diff,
    }
    return plan, folded, fold_diff, report
