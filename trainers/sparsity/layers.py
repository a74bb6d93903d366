"""Sparse convolution: a Conv2d whose forward uses an effective (thresholded or masked) weight.

`SparseConv2d` is installed by swapping the class of an existing `nn.Conv2d` in place, so parameter names,
hooks and state_dict keys are exactly those of the plain model. The method that owns the layer sets
`layer.tau` (soft threshold, a 0-d tensor that may carry a gradient to a learnable threshold) or
`layer.mask` (a bool tensor) before each forward.

Channel pruning uses a third route, `layer.channel`: a `ChannelTie` shared by every conv whose output channels
are pruned together. It scales output filter f of each of them by one factor (the group soft threshold
max(0, 1 - tau / ||W_f||), the norm over all tied filters, or a 0/1 keep mask), gates the conv bias, and gates
the BatchNorm that follows each tied conv, so a removed channel outputs exactly 0 after its BN: the trained
model then equals the compacted one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle


class _SoftThreshold(torch.autograd.Function):
    """W_eff = sign(W) * relu(|W| - tau) with a hand-written backward.

    Autograd of the composite expression keeps four weight-sized intermediates; this keeps none of its own:
    it saves W_eff itself, which the convolution that consumes it saves anyway (one shared tensor), and
    recovers from it all the gradients need, sign(W_eff) = sign(W) on survivors and 0 on pruned weights:
    dW_eff/dW = 1 on survivors, dW_eff/dtau = -sign(W) on survivors (method.md section 2).

    The forward works in place on one buffer (abs, -tau, clamp, *sign(W)): bit-identical to the reference
    formula (the same IEEE operations on the same values; sign(+-0) = +0 in both), with fewer passes over
    the weights and fewer allocations (docs/cost.md).
    """

    @staticmethod
    def forward(ctx, weight: Tensor, tau: Tensor) -> Tensor:  # type: ignore[override]
        out = weight.abs().sub_(tau).clamp_min_(0).mul_(torch.sign(weight))
        # out is nonzero exactly where |W| > tau, and there its sign is sign(W)
        ctx.save_for_backward(out)
        ctx.tau_shape = tau.shape
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (out,) = ctx.saved_tensors
        signed_keep = torch.sign(out)  # sign(W) on survivors, 0 on pruned weights
        signed_grad = grad * signed_keep
        grad_tau = -signed_grad.sum().reshape(ctx.tau_shape) if ctx.needs_input_grad[1] else None
        # (g * s) * s == g * |s| bit for bit (s in {-1, 0, 1}; zeros keep g's sign): one pass fewer
        grad_w = signed_grad.mul_(signed_keep) if ctx.needs_input_grad[0] else None
        return grad_w, grad_tau


def soft_threshold(weight: Tensor, tau: Tensor) -> Tensor:
    """Differentiable soft threshold; pruned entries are exact zeros, survivors shrink by tau."""
    return _SoftThreshold.apply(weight, tau)


def soft_threshold_reference(weight: Tensor, tau: Tensor) -> Tensor:
    """The plain autograd formula, kept for tests and documentation."""
    return torch.sign(weight) * torch.relu(weight.abs() - tau)


def group_soft_scale(norms: Tensor, tau: Tensor) -> Tensor:
    """max(0, 1 - tau / n_f) per output channel: the group soft threshold (the proximal step of group lasso).

    Survivors' filters shrink in norm by exactly tau; filters with n_f <= tau become exact zeros. Differentiable
    in the norms (so in W) and in tau; dscale/dtau = -1/n_f on survivors.
    """
    return torch.relu(1.0 - tau / norms)


def filter_norms(weights: Sequence[Tensor]) -> Tensor:
    """sqrt(sum over the tied convs of ||W_c[f]||^2) per output channel f (a depthwise conv adds its one filter)."""
    sq = sum(w.pow(2).flatten(1).sum(1) for w in weights)
    # clamp before sqrt: an all-zero filter would give an infinite gradient; clamped it gets none
    return sq.clamp_min(1e-30).sqrt()  # type: ignore[union-attr]


class ChannelTie:
    """Output channels shared by several convs (a residual add, a depthwise conv): pruned together.

    Exactly one of `tau` (a 0-d soft threshold, possibly carrying a gradient) or `keep` (a bool mask) is set by
    the owning method; with neither, nothing is pruned. `keep_one` caps tau below the largest filter norm, so
    at least one channel survives. `gate` is the bool keep mask of the last forward (read by the BN gate).
    """

    def __init__(self, convs: Sequence[nn.Conv2d]) -> None:
        self.convs = list(convs)
        self.tau: Tensor | None = None
        self.keep: Tensor | None = None
        self.keep_one = True
        self.gate: Tensor | None = None
        self.fixed: Tensor | None = None  # set when a tied conv is made plain: the others keep the same scale
        self.handles: list[RemovableHandle] = []  # the BN gates (`gate_batchnorm`)

    @torch.no_grad()
    def release(self) -> None:
        """Freeze the current scale and drop the BN gates: called when the first tied conv is made plain, since
        hardening overwrites its weight next, which would change the other tied convs' norms."""
        if self.fixed is None:
            self.fixed = self.scale().detach().clone()
        for h in self.handles:
            h.remove()
        self.handles = []

    def norms(self) -> Tensor:
        return filter_norms([c.weight for c in self.convs])

    def capped_tau(self, norms: Tensor) -> Tensor:
        """tau, lowered to the second-largest filter norm when it would remove every channel."""
        assert self.tau is not None
        if not self.keep_one:
            return self.tau
        n = norms.detach()
        cap = n.topk(2).values[1] if n.numel() > 1 else n.new_zeros(())
        return torch.minimum(self.tau, cap)

    def scale(self) -> Tensor:
        """The per-output-channel factor applied to every tied conv's filters (and `gate` refreshed)."""
        w = self.convs[0].weight
        if self.fixed is not None:
            out = self.fixed
        elif self.tau is not None:
            n = self.norms()
            out = group_soft_scale(n, self.capped_tau(n))
        elif self.keep is not None:
            out = self.keep.to(w.dtype)
        else:
            out = torch.ones(w.shape[0], dtype=w.dtype, device=w.device)
        self.gate = out.detach() > 0
        return out

    @torch.no_grad()
    def kept(self) -> Tensor:
        """Bool keep mask at the current weights and threshold (no gradient)."""
        return self.scale() > 0


class SparseConv2d(nn.Conv2d):
    """Conv2d with an effective weight. Never constructed directly: see `make_sparse_`."""

    component: str | None
    tau: Tensor | None
    mask: Tensor | None
    channel: ChannelTie | None

    def effective_weight(self) -> Tensor:
        if self.channel is not None:
            return self.weight * self.channel.scale().view(-1, *([1] * (self.weight.dim() - 1)))
        if self.tau is not None:
            return soft_threshold(self.weight, self.tau)
        if self.mask is not None:
            return self.weight * self.mask
        return self.weight

    def effective_bias(self) -> Tensor | None:
        """The bias, gated by the channel keep mask of the last `effective_weight` (removed channels add 0)."""
        tie = self.channel
        if self.bias is None or tie is None or tie.gate is None:
            return self.bias
        return self.bias * tie.gate.to(self.bias.dtype)

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        weight = self.effective_weight()
        return self._conv_forward(x, weight, self.effective_bias())


def gate_batchnorm(bn: nn.Module, tie: ChannelTie) -> RemovableHandle:
    """Multiply `bn`'s output by the tie's keep mask: a removed channel is 0 after its BN (= its affine zeroed)."""

    def hook(module: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> Tensor:
        if tie.gate is None or tie.gate.numel() != out.shape[1]:
            return out
        return out * tie.gate.to(out.dtype).view(1, -1, *([1] * (out.dim() - 2)))

    return bn.register_forward_hook(hook)


def make_sparse_(conv: nn.Conv2d, component: str | None) -> SparseConv2d:
    """Turn a plain Conv2d into a SparseConv2d in place (same parameters, same state_dict keys)."""
    if type(conv) is not nn.Conv2d and not isinstance(conv, SparseConv2d):
        raise TypeError(f"only plain nn.Conv2d can be made sparse, got {type(conv).__name__}")
    conv.__class__ = SparseConv2d
    conv.component = component
    conv.tau = None
    conv.mask = None
    conv.channel = None
    return conv  # type: ignore[return-value]


def make_plain_(conv: nn.Conv2d) -> nn.Conv2d:
    """Undo `make_sparse_`: the layer becomes a plain Conv2d; thresholds or masks are no longer applied."""
    if isinstance(conv, SparseConv2d):
        tie = conv.__dict__.get("channel")
        if tie is not None:
            tie.release()
        for attr in ("component", "tau", "mask", "channel"):
            conv.__dict__.pop(attr, None)
        conv.__class__ = nn.Conv2d
    return conv


def sparse_layers(model: nn.Module) -> dict[str, SparseConv2d]:
    return {n: m for n, m in model.named_modules() if isinstance(m, SparseConv2d)}


__all__ = [
    "ChannelTie",
    "SparseConv2d",
    "filter_norms",
    "gate_batchnorm",
    "group_soft_scale",
    "make_plain_",
    "make_sparse_",
    "soft_threshold",
    "soft_threshold_reference",
    "sparse_layers",
]
