"""Soft-threshold reparameterisation: forward, gradients, per-component thresholds, hardening."""

from __future__ import annotations

import torch

from pipeline.models.multitask import task_channels
from pipeline.models.registry import create_model
from trainers.sparsity.harden import harden_
from trainers.sparsity.layers import SparseConv2d, soft_threshold, soft_threshold_reference
from trainers.sparsity.methods import build_method


def replace(obj, **changes):
    import dataclasses

    return dataclasses.replace(obj, **changes)


def test_forward_and_gradients_match_hand_computation():
    w = torch.tensor([0.5, -0.2, 0.05, -0.7], requires_grad=True)
    tau = torch.tensor(0.1, requires_grad=True)
    out = soft_threshold(w, tau)
    assert torch.allclose(out, torch.tensor([0.4, -0.1, 0.0, -0.6]))
    assert out[2].item() == 0.0  # pruned entries are exact zeros
    out.backward(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert torch.equal(w.grad, torch.tensor([1.0, 2.0, 0.0, 4.0]))  # no gradient to pruned weights
    # dL/dtau = -sum over survivors of sign(w) * g = -(1 - 2 - 4) = 5
    assert abs(tau.grad.item() - 5.0) < 1e-6


def test_custom_autograd_equals_reference_formula():
    torch.manual_seed(0)
    w = torch.randn(16, 8, 3, 3, requires_grad=True)
    tau = torch.tensor(0.7, requires_grad=True)
    g = torch.randn(16, 8, 3, 3)
    soft_threshold(w, tau).backward(g)
    gw, gt = w.grad.clone(), tau.grad.clone()
    w.grad = tau.grad = None
    ref = soft_threshold_reference(w, tau)
    ref.backward(g)
    assert torch.equal(soft_threshold(w, tau), ref)
    assert torch.equal(gw, w.grad) and torch.allclose(gt, tau.grad)


def _tiny_adapmtl(tiny_cfg):
    model = create_model("tiny_mtl", task_channels(tiny_cfg.tasks, 6))
    method, _ = build_method(tiny_cfg.sparsity, 30)
    method.attach(model)
    return model, method


def test_one_threshold_per_component_all_get_gradients(tiny_cfg):
    model, method = _tiny_adapmtl(replace(tiny_cfg, sparsity=replace(tiny_cfg.sparsity, method="adapmtl_component")))
    assert method.components == ["backbone", "seg", "depth", "normal"]
    assert method.s.shape == (4,) and method.s.requires_grad
    # thresholds live in the method, so the model's state_dict keys are the plain model's (no duplicates)
    assert not any("threshold" in k for k in model.state_dict())
    method.before_forward(26)  # late in the ramp: real pruning everywhere
    out = model(torch.rand(2, 3, 32, 40))
    sum(v.square().mean() for v in out.values()).backward()
    assert method.s.grad is not None and bool((method.s.grad != 0).all())
    layers = [m for m in model.modules() if isinstance(m, SparseConv2d)]
    assert {layer.component for layer in layers} == {"backbone", "seg", "depth", "normal"}


def _hierarchical(tiny_cfg, **changes):
    return replace(tiny_cfg, sparsity=replace(tiny_cfg.sparsity, method="adapmtl_hierarchical", **changes))


def test_the_default_is_one_threshold_per_layer_with_component_bounds_and_summaries(tiny_cfg):
    model, method = _tiny_adapmtl(tiny_cfg)  # the default adapmtl
    assert method.granularity == "layer" and method.s.shape == (len(method.layers),)
    method.before_forward(26)
    assert set(method.thresholds()) == set(method.components)
    # a component pushed past component_max is shifted back as a whole, per-layer thresholds included
    with torch.no_grad():
        seg = [i for i, c in enumerate(method.comp_of_group.tolist()) if method.components[c] == "seg"]
        method.s[seg] = 8.0  # seg's thresholds far above everyone's: it would lose almost every weight
    logm = method.log_magnitudes()
    names = [n for n, layer in method.layers.items() if layer.component == "seg"]

    def seg_sparsity() -> float:
        vals = torch.cat([logm[n] - method.s[method.group_of[n]] for n in names])
        return float((vals <= method.b).double().mean())

    method.solve_offset(0.9, logm)
    assert seg_sparsity() > method.cfg.component_max  # unbounded, seg is pruned past the bound
    method.apply_bounds(logm)
    assert seg_sparsity() <= method.cfg.component_max + 1e-3


def test_hierarchical_thresholds_one_per_layer_grouped_by_component(tiny_cfg):
    model, method = _tiny_adapmtl(_hierarchical(tiny_cfg))
    assert method.granularity == "hierarchical"
    assert method.s.shape == (len(method.layers),)
    comps = [method.components[int(i)] for i in method.comp_of_group]
    assert comps == [layer.component for layer in method.layers.values()]
    method.before_forward(26)
    out = model(torch.rand(2, 3, 32, 40))
    sum(v.square().mean() for v in out.values()).backward()
    assert method.s.grad is not None and bool((method.s.grad != 0).all())
    assert set(method.thresholds()) == set(method.components)


def test_hierarchical_step_moves_costly_component_and_costly_layer_denser(tiny_cfg):
    """Between components on pooled costs, then between layers inside each component."""
    _, method = _tiny_adapmtl(_hierarchical(tiny_cfg, alloc_bound=10.0))
    method.before_forward(26)
    logm = method.log_magnitudes()
    seg = [i for i, c in enumerate(method.comp_of_group.tolist()) if method.components[c] == "seg"]
    assert len(seg) >= 2
    cost = torch.ones(len(method.groups), dtype=torch.float64)
    cost[seg] = 100.0  # pruning seg costs much more per weight than anything else...
    cost[seg[0]] = 1000.0  # ...and its first layer most of all
    with torch.no_grad():
        method.grad_ema.copy_(cost * method._density_at_threshold(logm))  # gradient = cost x dN/ds
        before = method.s.detach().clone()
    method.reallocate(logm)
    moved = method.s.detach() - before
    others = [i for i in range(len(moved)) if i not in seg]
    assert float(moved[seg].max()) < float(moved[others].min())  # the whole component keeps more weights
    assert float(moved[seg[0]]) < float(moved[seg[1:]].min())  # its costliest layer keeps the most


def test_hardened_weights_reproduce_soft_model_exactly(tiny_cfg):
    model, method = _tiny_adapmtl(tiny_cfg)
    method.before_forward(26)
    model.eval()
    x = torch.rand(2, 3, 32, 40)
    with torch.no_grad():
        soft = model(x)
        raw = {n: layer.weight.detach().clone() for n, layer in method.layers.items()}
        hardened = harden_(method)
        hard = model(x)
    for k in soft:
        assert torch.equal(soft[k], hard[k])
    # shrunk values sign(W)(|W| - tau), not W * mask
    name = next(iter(hardened))
    keep = hardened[name] != 0
    assert bool((hardened[name][keep].abs() < raw[name][keep].abs()).all())
    assert not any(isinstance(m, SparseConv2d) for m in model.modules())
    # idempotent: a second call changes nothing
    assert harden_(method) == {}
    with torch.no_grad():
        again = model(x)
    assert all(torch.equal(again[k], hard[k]) for k in hard)


def test_state_of_another_granularity_is_refused_with_one_line(tiny_cfg):
    import pytest

    from pipeline.errors import PipelineError

    _, component = _tiny_adapmtl(replace(tiny_cfg, sparsity=replace(tiny_cfg.sparsity, method="adapmtl_component")))
    _, hierarchical = _tiny_adapmtl(_hierarchical(tiny_cfg))
    with pytest.raises(PipelineError, match="adapmtl_component") as err:
        hierarchical.load_state_dict(component.state_dict())
    assert "\n" not in str(err.value)
    hierarchical.load_state_dict(hierarchical.state_dict())  # its own state loads
