"""Channel pruning (`sparsity.structure: channel`): AdapMTL's learned allocation over whole filters, MAC budget.

Unit pruned: a channel of a coupled group (`pipeline.models.channels.channel_groups`: convs whose output channels
are tied by a residual add, summed branches or a depthwise conv). Budget: the fraction of the model's conv MACs
removed, counted exactly after compaction (`ChannelSpace`). Every method keeps at least one channel per group.

`ChannelSoftThresholds` is the AdapMTL controller of `trainers.sparsity.adapmtl.SoftThresholds` with filters in
place of weights. Group g (its tied convs) uses the group soft threshold

    W_c[f] <- W_c[f] * max(0, 1 - tau_g / n_f),   n_f = sqrt(sum_c ||W_c[f]||^2),   tau_g = rms_f(n_f) exp(s_g + b)

- `rms_f(n_f)` (over the group's filters) makes the threshold scale-invariant, as rms(W_l) does for weights.
- `b` is solved every `update_every` steps (and once at the end) so that the removed MAC fraction equals the
  cubic schedule's value, to within one channel (`ChannelSpace.solve_cut`; exact bilinear MAC count).
- `s_g` carries the split, learned from the task loss as for weights: dL/ds_g divided by dMACs/ds_g (channels per
  unit of log-threshold at the threshold, counted in a band of +-`CHANNEL_BAND`, times the MACs one more channel
  of g removes) is the marginal loss per removed MAC; the same preconditioned step moves s toward equal marginal
  costs, between components on pooled sums and between the groups of a component (hierarchical).
- A removed channel is gated to exactly 0 after its BatchNorm (and its conv bias), so the trained model equals the
  compacted one (`trainers.sparsity.layers.ChannelTie`).

Baselines in the same loop (`ChannelMasks`): L1-norm filter pruning at one rate in every group (`l1_uniform`) and
with one global ranking (`l1_global`, the L1 norm of each filter divided by the mean filter L1 norm of its group:
the per-layer normalisation that makes layers of different weight scale comparable, as rms does above; the cut
is placed where the MAC target is met). Masks are recomputed on the same cubic schedule until the ramp ends.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from pipeline.errors import ConfigError
from pipeline.models.channels import kept_from_mask
from pipeline.models.factory import example_image
from trainers.sparsity.adapmtl import SoftThresholds, kth_smallest
from trainers.sparsity.base import SparsityMethod
from trainers.sparsity.channel_space import ChannelSpace

__all__ = ["CHANNEL_BAND", "ChannelDense", "ChannelMasks", "ChannelSoftThresholds"]

CHANNEL_BAND = 0.25  # half-width (log-threshold units) of the band counting channels at a threshold: a layer has
# tens of channels, not thousands of weights, so the weights' 0.05 band would mostly be empty
DEFAULT_EXAMPLE_HW = (64, 64)  # MACs are traced at this size unless `attach` gets the run's example


class ChannelMixin:
    """What every channel method shares: the channel space, the keep plan, and MAC-based measurements."""

    structure = "channel"
    space: ChannelSpace
    layers: dict
    cfg: Any

    def attach(self, model: nn.Module, tasks: list[str] | None = None, example: Tensor | None = None) -> None:
        """As `SparsityMethod.attach`, then tie the channel groups. `example`: an input at the run's size (the
        MAC weights are traced at it); default a 64x64 image."""
        self._example = example if example is not None else example_image(model, 1, *DEFAULT_EXAMPLE_HW)
        self._model = model
        super().attach(model, tasks)  # type: ignore[misc]  # calls setup(), which builds the space

    def _build_space(self, check_target: bool = True) -> None:
        self.space = ChannelSpace(self._model, self._example[:1], self.layers)
        del self._model, self._example
        if not self.space.groups:
            raise ConfigError(
                "sparsity.structure=channel: no channel group of this model is prunable (every group is tied to a "
                "dense layer or a model output); check sparsity.rules or use sparsity.structure=unstructured"
            )
        reachable = self.space.removed_fraction(self.space.max_removable())
        if check_target and self.cfg.target > reachable + 1e-9:
            raise ConfigError(
                f"sparsity.target={self.cfg.target} is more of this model's MACs than channel pruning can remove: "
                f"keeping one channel per prunable group removes at most {reachable:.3f} (the rest is in dense "
                "layers); lower sparsity.target"
            )

    def channel_keep(self) -> dict[str, Tensor]:
        """Kept channel indices (sorted int64) per prunable group, for hardening (`compact_`)."""
        return {n: kept_from_mask(m) for n, m in zip(self.space.names, self.space.kept_masks())}

    @torch.no_grad()
    def measure(self) -> dict[str, Any]:
        """`overall` / `components`: MAC fractions removed (what the target is); `layers`: the fraction of each
        prunable conv's weights compaction removes; `channels`: kept channels per group and parameter counts."""
        masks = self.space.kept_masks()
        info = self.space.describe(masks)
        kept = self.space.kept_weight_fractions(self.space.removed_counts(masks))
        per_layer = {n: 1.0 - kept.get(n, 1.0) for n in self.layers}
        sizes = {n: layer.weight.numel() for n, layer in self.layers.items()}
        total = sum(sizes.values())
        comp_total: dict[str, float] = {}
        comp_removed: dict[str, float] = {}
        for n, layer in self.layers.items():
            comp_total[layer.component] = comp_total.get(layer.component, 0) + sizes[n]
            comp_removed[layer.component] = comp_removed.get(layer.component, 0) + per_layer[n] * sizes[n]
        return {
            "overall": info["mac_fraction"],
            "components": info["component_mac_fractions"],
            "layers": per_layer,
            "prunable_params": total,
            "param_sparsity": sum(per_layer[n] * sizes[n] for n in sizes) / max(total, 1),
            "param_components": {c: comp_removed[c] / max(comp_total[c], 1) for c in comp_total},
            "channels": info,
        }


class ChannelDense(ChannelMixin, SparsityMethod):
    """No pruning, channel-mode measurements (the dense reference of a channel run)."""

    name = "dense"

    def setup(self) -> None:
        self._build_space(check_target=False)


class ChannelSoftThresholds(ChannelMixin, SoftThresholds):
    """AdapMTL over channel groups (see the module docstring). Granularity: `hierarchical` (per component,
    refined per group), `component` (one threshold per component), `layer` (one per group, no component level)."""

    threshold_kind = "tau / rms(filter norm)"

    def setup(self) -> None:
        self._build_space()
        sp = self.space
        self.groups = list(sp.components) if self.granularity == "component" else list(sp.names)
        index = {g: i for i, g in enumerate(self.groups)}
        self.group_of = {n: index[c if self.granularity == "component" else n] for n, c in zip(sp.names, sp.component)}
        comp_index = {c: i for i, c in enumerate(sp.components)}
        self.components = list(sp.components)
        comp_of_group = [0] * len(self.groups)
        for n, c in zip(sp.names, sp.component):
            comp_of_group[self.group_of[n]] = comp_index[c]
        dev = next(iter(self.layers.values())).weight.device
        self.comp_of_group = torch.tensor(comp_of_group, device=dev, dtype=torch.long)
        self.s = torch.zeros(len(self.groups), device=dev, requires_grad=self.allocation == "marginal")
        self.b = torch.tensor(-30.0, device=dev)
        self.grad_ema = torch.zeros(len(self.groups), device=dev)
        self.rms = {n: torch.ones((), device=dev) for n in sp.names}
        dense = [g.macs_per_channel * g.size for g in sp.groups]
        self.numel = torch.zeros(len(self.groups), dtype=torch.float64, device=dev)
        for n, d in zip(sp.names, dense):
            self.numel[self.group_of[n]] += float(d)

    # -- controller parts (the SoftThresholds names, over channels) -------------------------------------------
    @torch.no_grad()
    def log_magnitudes(self) -> dict[str, Tensor]:
        """log(n_f / rms_f(n_f)) per channel group (the key compared against the offset, minus s_g)."""
        out = {}
        for n in self.space.names:
            norms = self.space.ties[n].norms().detach()
            self.rms[n] = norms.pow(2).mean().sqrt().clamp_min(1e-12)
            out[n] = torch.log(norms / self.rms[n])
        return out

    def _keys(self, logm: dict[str, Tensor]) -> list[Tensor]:
        return [logm[n] - self.s[self.group_of[n]].detach() for n in self.space.names]

    @torch.no_grad()
    def solve_offset(self, fraction: float, logm: dict[str, Tensor]) -> None:
        b, _ = self.space.solve_cut(self._keys(logm), fraction)
        self.b.fill_(b)

    @torch.no_grad()
    def apply_bounds(self, logm: dict[str, Tensor]) -> None:
        """Keep each component's fraction of removed channels within [component_min, component_max]."""
        if self.granularity == "layer":
            return
        lo, hi = self.cfg.component_min, self.cfg.component_max
        keys = dict(zip(self.space.names, self._keys(logm)))
        for c in self.components:
            members = [n for n, cc in zip(self.space.names, self.space.component) if cc == c]
            vals = torch.cat([keys[n] for n in members])
            frac = (vals <= self.b).double().mean().item()
            if frac > hi or frac < lo:
                k = max(1, int(round((hi if frac > hi else lo) * vals.numel())))
                shift = kth_smallest(vals, k) - self.b
                for g in {self.group_of[n] for n in members}:
                    self.s[g] += shift

    def set_thresholds(self) -> None:
        for n in self.space.names:
            self.space.ties[n].tau = self.rms[n] * torch.exp(self.s[self.group_of[n]] + self.b)

    @torch.no_grad()
    def _density_at_threshold(self, logm: dict[str, Tensor]) -> Tensor:
        """dMACs/ds_g: channels per unit of log-threshold at each threshold, times the MACs one more removes."""
        keys = self._keys(logm)
        removed = torch.tensor([float((k <= self.b).sum()) for k in keys], dtype=torch.float64)
        removed = torch.minimum(removed, self.space.max_removable())
        marginal = self.space.marginal_macs(removed)
        density = torch.zeros(len(self.groups), dtype=torch.float64, device=self.s.device)
        for i, (n, k) in enumerate(zip(self.space.names, keys)):
            count = max(float(((k - self.b).abs() < CHANNEL_BAND).sum()), 1.0)
            density[self.group_of[n]] += count * float(marginal[i]) / (2 * CHANNEL_BAND)
        return density

    @torch.no_grad()
    def _marginal_cost_terms(self, logm: dict[str, Tensor], density: Tensor) -> tuple[Tensor, Tensor]:
        # the gradient signal only: the saliency signal reads per-weight Adam moments, not defined per filter
        return self.grad_ema.double(), density


class ChannelMasks(ChannelMixin, SparsityMethod):
    """L1-norm filter pruning on the cubic schedule: `uniform` (one channel rate in every group) or `global` (one
    ranking of per-group normalised filter L1 norms). Masks are recomputed every `update_every` steps until the
    ramp ends; removed filters are held at zero so optimizer momentum cannot revive them."""

    threshold_kind = "filter L1 cut"

    def __init__(self, cfg, total_steps: int, scope: str):
        super().__init__(cfg, total_steps)
        if scope not in ("uniform", "global"):
            raise ValueError(f"bad L1 scope {scope}")
        self.scope = scope
        self.cut: dict[str, float] = {}

    def setup(self) -> None:
        self._build_space()
        for tie in self.space.ties.values():
            tie.keep = torch.ones(tie.convs[0].out_channels, dtype=torch.bool, device=tie.convs[0].weight.device)

    @torch.no_grad()
    def _l1(self) -> list[Tensor]:
        return [sum(c.weight.detach().abs().flatten(1).sum(1) for c in self.space.ties[n].convs)
                for n in self.space.names]

    @torch.no_grad()
    def _uniform_counts(self, fraction: float) -> tuple[float, Tensor]:
        """One channel rate p for every group (rounded per group, at least one channel kept), closest to the target."""
        sizes = self.space.sizes

        def at(p: float) -> Tensor:
            return torch.minimum(torch.floor(p * sizes + 0.5), self.space.max_removable())

        rates = sorted({0.0} | {(k - 0.5) / float(s) for s in sizes.tolist() for k in range(1, int(s))})
        rates = [r for r in rates if 0.0 <= r <= 1.0]
        lo, hi = 0, len(rates) - 1
        while hi - lo > 1:  # largest rate whose fraction stays <= target
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if self.space.removed_fraction(at(rates[mid])) <= fraction else (lo, mid)
        best = min((lo, hi), key=lambda i: abs(self.space.removed_fraction(at(rates[i])) - fraction))
        return rates[best], at(rates[best])

    @torch.no_grad()
    def _update_masks(self, fraction: float) -> None:
        l1 = self._l1()
        if self.scope == "uniform":
            rate, counts = self._uniform_counts(fraction)
            self.cut = {"channel_rate": rate}
            masks = []
            for v, k in zip(l1, counts.tolist()):
                keep = torch.ones_like(v, dtype=torch.bool)
                keep[torch.argsort(v, stable=True)[: int(k)]] = False
                masks.append(keep)
        else:
            keys = [torch.log((v / v.mean().clamp_min(1e-30)).clamp_min(1e-30)) for v in l1]
            b, _ = self.space.solve_cut(keys, fraction)
            self.cut = {"global": b}
            masks = []
            for k in keys:
                keep = k > b
                keep[torch.argmax(k)] = True
                masks.append(keep)
        for n, keep in zip(self.space.names, masks):
            self.space.ties[n].keep = keep
        self._zero_removed()

    @torch.no_grad()
    def _zero_removed(self) -> None:
        for tie in self.space.ties.values():
            for c in tie.convs:
                c.weight[~tie.keep] = 0

    def before_forward(self, step: int) -> None:
        if step <= int(self.cfg.ramp_end * self.total_steps) and step % self.cfg.update_every == 0:
            self._update_masks(self.target_at(step))

    def after_optimizer_step(self, step: int) -> None:
        self._zero_removed()

    def finalize(self) -> None:
        # removed filters are zero, so they rank lowest: re-solving at the target keeps them removed
        self._update_masks(self.cfg.target)

    def thresholds(self) -> dict[str, float]:
        return dict(self.cut)

    def state_dict(self) -> dict[str, Any]:
        return {"keep": {n: t.keep.clone() for n, t in self.space.ties.items()}, "cut": dict(self.cut)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for n, keep in state["keep"].items():
            self.space.ties[n].keep = keep.to(torch.bool)
        self.cut = dict(state.get("cut", {}))
