"""The channel space of a model for channel pruning: its prunable channel groups, their ties, and exact MACs.

Groups come from `pipeline.models.channels.channel_groups` (the same records hardening compacts with), so what
training prunes is what compaction removes. MACs are counted exactly, not per channel in isolation: a conv's
MACs scale with (kept output channels / out) x (kept input channels / in), and removing channels of two adjacent
groups removes their shared slice once. The per-channel marginal (`marginal_macs`) is the derivative of that
bilinear count at the current state; `ChannelGroup.macs_per_channel` is its value at the dense model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pipeline.models.channels import ChannelGroup, channel_groups, conv_macs
from trainers.sparsity.layers import ChannelTie, SparseConv2d, gate_batchnorm

__all__ = ["ChannelSpace"]


class ChannelSpace:
    """Prunable channel groups of one model (each tied by a `ChannelTie`), and MAC accounting over them."""

    def __init__(self, model: nn.Module, example: Tensor, layers: dict[str, SparseConv2d]) -> None:
        modules = dict(model.named_modules())
        self.all_groups: list[ChannelGroup] = channel_groups(model, example, set(layers))
        self.groups = [g for g in self.all_groups if g.prunable]
        self.names = [g.name for g in self.groups]
        self.component = [layers[g.name].component for g in self.groups]
        self.sizes = torch.tensor([g.size for g in self.groups], dtype=torch.float64)
        self.ties: dict[str, ChannelTie] = {}
        for g in self.groups:
            tie = ChannelTie([modules[c] for c in g.convs])
            tie.handles = [gate_batchnorm(modules[bn], tie) for bn in g.norms]
            for c in g.convs:
                layers[c].channel = tie
            self.ties[g.name] = tie
        self._build_costs(modules, conv_macs(model, example), layers)

    def _build_costs(self, modules: dict[str, nn.Module], macs: dict[str, int], layers: dict[str, SparseConv2d]
                     ) -> None:
        names = list(macs)
        index = {n: i for i, n in enumerate(names)}
        n_conv, n_group = len(names), len(self.groups)
        self.conv_names = names
        self.base = torch.tensor([float(macs[n]) for n in names], dtype=torch.float64)
        self.total = float(self.base.sum())
        # out_of[c, g] = 1 when conv c's output channels are group g's; in_of[c, g] when its input channels are
        self.out_of = torch.zeros(n_conv, n_group, dtype=torch.float64)
        self.in_of = torch.zeros(n_conv, n_group, dtype=torch.float64)
        for j, g in enumerate(self.groups):
            for c in g.convs:
                if c in index:
                    self.out_of[index[c], j] = 1.0
            for c in g.consumers:
                if c in index:
                    self.in_of[index[c], j] = 1.0
        self.out_ch = torch.tensor([float(modules[n].out_channels) for n in names], dtype=torch.float64)
        # a depthwise conv's input channels are its own group's: its MACs scale with one factor only
        self.in_ch = torch.tensor([float(modules[n].in_channels) for n in names], dtype=torch.float64)
        self.params = torch.tensor([float(modules[n].weight.numel()) for n in names], dtype=torch.float64)
        comp = {n: (layers[n].component if n in layers else None) for n in names}
        self.components = list(dict.fromkeys(c for c in self.component if c is not None))
        self.conv_component = [comp[n] for n in names]

    # -- MACs ------------------------------------------------------------------------------------------
    def _factors(self, removed: Tensor) -> tuple[Tensor, Tensor]:
        r = removed.to(torch.float64)
        fo = 1.0 - (self.out_of @ r) / self.out_ch
        fi = 1.0 - (self.in_of @ r) / self.in_ch
        return fo, fi

    def remaining_per_conv(self, removed: Tensor) -> Tensor:
        fo, fi = self._factors(removed)
        return self.base * fo * fi

    def kept_weight_fractions(self, removed: Tensor) -> dict[str, float]:
        """Per conv, the fraction of its weights that compaction keeps (output and input channels both shrink)."""
        fo, fi = self._factors(removed)
        return {n: float(v) for n, v in zip(self.conv_names, fo * fi)}

    def removed_fraction(self, removed: Tensor) -> float:
        """MACs removed / dense model MACs, for `removed` channels per group (float64 counts)."""
        return 1.0 - float(self.remaining_per_conv(removed).sum()) / max(self.total, 1.0)

    def component_fractions(self, removed: Tensor) -> dict[str, float]:
        """Per component, the MACs removed from its convs / its convs' dense MACs (a conv belongs to the component
        its sparsity rule gives it; a dense-by-rule conv counts only in the overall fraction)."""
        left = self.remaining_per_conv(removed)
        out = {}
        for c in self.components:
            sel = torch.tensor([cc == c for cc in self.conv_component])
            dense = float(self.base[sel].sum())
            out[c] = 1.0 - float(left[sel].sum()) / dense if dense > 0 else 0.0
        return out

    def marginal_macs(self, removed: Tensor) -> Tensor:
        """MACs removed by one more channel of each group at the current state (the bilinear count's gradient)."""
        fo, fi = self._factors(removed)
        per = self.base / (self.out_ch * self.in_ch)
        d_out = (per * fi * self.in_ch) @ self.out_of  # an output channel fewer: base * fi / out
        d_in = (per * fo * self.out_ch) @ self.in_of  # an input channel fewer: base * fo / in
        return (d_out + d_in).clamp_min(1.0)

    def max_removable(self) -> Tensor:
        return self.sizes - 1.0

    # -- state -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def kept_masks(self) -> list[Tensor]:
        return [self.ties[n].kept() for n in self.names]

    def removed_counts(self, masks: Sequence[Tensor] | None = None) -> Tensor:
        masks = self.kept_masks() if masks is None else masks
        return torch.tensor([float((~m).sum()) for m in masks], dtype=torch.float64)

    # -- solving a cut ---------------------------------------------------------------------------------
    def solve_cut(self, keys: Sequence[Tensor], target: float) -> tuple[float, Tensor]:
        """A cut b such that removing every channel with key <= b (each group's largest key never) removes the
        MAC fraction closest to `target`; returns (b, removed counts). b lies halfway between two keys, so the
        float rounding of thresholds derived from it cannot flip the boundary channel."""
        cand = [k.detach().double().cpu() for k in keys]
        finite = []
        for k in cand:
            if k.numel() > 1:
                top = int(torch.argmax(torch.where(torch.isfinite(k), k, torch.full_like(k, -1e300))))
                k = k.clone()
                k[top] = float("inf")  # the strongest channel of a group is never removed
            finite.append(k)
        sorted_keys = [torch.sort(k).values for k in finite]
        allv = torch.unique(torch.cat([k[torch.isfinite(k)] for k in sorted_keys]))
        if allv.numel() == 0 or target <= 0:
            return (float(allv.min()) - 1.0 if allv.numel() else -30.0), torch.zeros(len(keys), dtype=torch.float64)

        def removed_at(b: float) -> Tensor:
            return torch.tensor([float(torch.searchsorted(k, torch.tensor([b], dtype=k.dtype), right=True)[0])
                                 for k in sorted_keys], dtype=torch.float64)

        lo, hi = -1, allv.numel() - 1  # invariant: fraction(allv[lo]) <= target < fraction(allv[hi]) (lo=-1: none)
        if self.removed_fraction(removed_at(float(allv[hi]))) <= target:
            lo = hi
        else:
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if self.removed_fraction(removed_at(float(allv[mid]))) <= target else (lo, mid)
        under = removed_at(float(allv[lo])) if lo >= 0 else torch.zeros(len(keys), dtype=torch.float64)
        choice = lo
        if lo + 1 < allv.numel():
            over = removed_at(float(allv[lo + 1]))
            if abs(self.removed_fraction(over) - target) < abs(self.removed_fraction(under) - target):
                choice = lo + 1
        b = _midpoint(allv, choice)
        return b, removed_at(b)

    def describe(self, masks: Sequence[Tensor] | None = None) -> dict[str, object]:
        """The channel part of a sparsity report: MAC fractions, kept channels per group, and what stayed dense."""
        masks = self.kept_masks() if masks is None else masks
        removed = self.removed_counts(masks)
        fo, fi = self._factors(removed)
        return {
            "mac_fraction": self.removed_fraction(removed),
            "param_fraction_all_convs": 1.0 - float((self.params * fo * fi).sum()) / max(float(self.params.sum()), 1),
            "component_mac_fractions": self.component_fractions(removed),
            "dense_macs": int(self.total),
            "remaining_macs": int(round(float(self.remaining_per_conv(removed).sum()))),
            "groups": [
                {"name": g.name, "component": c, "convs": list(g.convs), "size": g.size, "kept": int(m.sum()),
                 "macs_per_channel": g.macs_per_channel}
                for g, c, m in zip(self.groups, self.component, masks)
            ],
            "at_one_channel": [g.name for g, m in zip(self.groups, masks) if int(m.sum()) == 1 and g.size > 1],
            "dense_groups": [{"name": g.name, "reason": g.reason} for g in self.all_groups if not g.prunable],
        }


def _midpoint(values: Tensor, i: int) -> float:
    """Halfway between values[i] and values[i + 1] (below values[0] for i = -1, above the last for the last)."""
    if i < 0:
        return float(values[0]) - 1.0
    if i + 1 >= values.numel():
        return float(values[i]) + 1.0
    return float((values[i] + values[i + 1]) / 2)

