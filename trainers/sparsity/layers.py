"""Sparse convolution: a Conv2d whose forward uses an effective (thresholded or masked) weight.

`SparseConv2d` is installed by swapping the class of an existing `nn.Conv2d` in place, so parameter names,
hooks and state_dict keys are exactly those of the plain model. The method that owns the layer sets
`layer.tau` (soft threshold, a 0-d tensor that may carry a gradient to a learnable threshold) or
`layer.mask` (a bool tensor) before each forward.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


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


class SparseConv2d(nn.Conv2d):
    """Conv2d with an effective weight. Never constructed directly: see `make_sparse_`."""

    component: str | None
    tau: Tensor | None
    mask: Tensor | None

    def effective_weight(self) -> Tensor:
        if self.tau is not None:
            return soft_threshold(self.weight, self.tau)
        if self.mask is not None:
            return self.weight * self.mask
        return self.weight

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        return self._conv_forward(x, self.effective_weight(), self.bias)


def make_sparse_(conv: nn.Conv2d, component: str | None) -> SparseConv2d:
    """Turn a plain Conv2d into a SparseConv2d in place (same parameters, same state_dict keys)."""
    if type(conv) is not nn.Conv2d and not isinstance(conv, SparseConv2d):
        raise TypeError(f"only plain nn.Conv2d can be made sparse, got {type(conv).__name__}")
    conv.__class__ = SparseConv2d
    conv.component = component
    conv.tau = None
    conv.mask = None
    return conv  # type: ignore[return-value]


def make_plain_(conv: nn.Conv2d) -> nn.Conv2d:
    """Undo `make_sparse_`: the layer becomes a plain Conv2d; thresholds or masks are no longer applied."""
    if isinstance(conv, SparseConv2d):
        for attr in ("component", "tau", "mask"):
            conv.__dict__.pop(attr, None)
        conv.__class__ = nn.Conv2d
    return conv


def sparse_layers(model: nn.Module) -> dict[str, SparseConv2d]:
    return {n: m for n, m in model.named_modules() if isinstance(m, SparseConv2d)}


__all__ = [
    "SparseConv2d",
    "make_plain_",
    "make_sparse_",
    "soft_threshold",
    "soft_threshold_reference",
    "sparse_layers",
]
