"""The controller's rules: the cubic schedule, the component bounds, the cost floor and clamp, the per-layer step."""

from __future__ import annotations

import pytest
import torch

from pipeline.models.multitask import task_channels
from pipeline.models.registry import create_model
from tests.helpers import with_sparsity
from trainers.sparsity.base import cubic_target
from trainers.sparsity.methods import build_method


def _attached(cfg, steps=30):
    torch.manual_seed(0)
    model = create_model("tiny_mtl", task_channels(cfg.tasks, 6))
    method, _ = build_method(cfg.sparsity, steps)
    method.attach(model)
    return model, method


def test_cubic_schedule_shape():
    f = [cubic_target(s, 100, 0.9, 0.1, 0.7) for s in range(101)]
    assert f[0] == f[10] == 0.0 and f[70] == f[100] == 0.9  # zero before the ramp, held after
    assert all(b >= a for a, b in zip(f, f[1:]))  # never decreasing
    inc = [b - a for a, b in zip(f[10:70], f[11:71])]
    assert all(b <= a + 1e-12 for a, b in zip(inc, inc[1:]))  # concave: fastest at the start of the ramp
    assert f[40] == pytest.approx(0.9 * (1 - 0.5**3))  # halfway: 7/8 of the target
    assert cubic_target(5, 10, 0.5, 0.3, 0.3) == 0.5  # degenerate ramp: the target at once


def test_apply_bounds_caps_a_component_and_keeps_the_rest(tiny_cfg):
    cfg = with_sparsity(tiny_cfg, method="adapmtl_component", component_max=0.8, alloc_bound=50.0)
    _, method = _attached(cfg)
    logm = method.log_magnitudes()
    with torch.no_grad():
        method.s[method.components.index("seg")] = 20.0  # far above the others: seg alone is pruned away
    method.solve_offset(0.5, logm)
    method.apply_bounds(logm)
    method.set_thresholds()
    comps = method.measure()["components"]
    assert comps["seg"] == pytest.approx(0.8, abs=0.01)  # capped at component_max
    method.solve_offset(0.5, logm)
    method.set_thresholds()
    assert method.measure()["overall"] == pytest.approx(0.5, abs=1e-3)  # the offset re-solve keeps the target


def test_apply_bounds_holds_per_layer_thresholds_too(tiny_cfg):
    _, method = _attached(with_sparsity(tiny_cfg, method="adapmtl", component_max=0.5))
    assert method.granularity == "layer"
    logm = method.log_magnitudes()
    method.solve_offset(0.6, logm)
    method.set_thresholds()
    assert max(method.measure()["components"].values()) > 0.5 + 0.01  # some component over the bound
    method.apply_bounds(logm)
    method.set_thresholds()
    assert max(method.measure()["components"].values()) <= 0.5 + 0.01


def test_cost_floor_and_clamp(tiny_cfg):
    _, method = _attached(with_sparsity(tiny_cfg, alloc_lr=0.05))
    cost = torch.tensor([1.0, 0.0, 1e6, 1.0], dtype=torch.float64)
    weight = torch.ones(4, dtype=torch.float64)
    step = method._centred_log_step(cost, weight, torch.zeros(4, dtype=torch.long))
    assert torch.isfinite(step).all()  # a zero cost is floored at 1e-3 x the smallest positive one, not -inf
    assert float(step.abs().max()) == pytest.approx(0.05)  # clamped to +-1 before alloc_lr
    assert float(step[2]) == pytest.approx(0.05) and float(step[1]) == pytest.approx(-0.05)
    # centred within each part: two parts, each with its own mean
    step2 = method._centred_log_step(torch.tensor([1.0, 2.0, 4.0, 8.0], dtype=torch.float64), weight,
                                     torch.tensor([0, 0, 1, 1]))
    assert float(step2[0]) == pytest.approx(-float(step2[1])) and float(step2[2]) == pytest.approx(-float(step2[3]))


def test_per_layer_step_prunes_cheap_layers_more(tiny_cfg):
    cfg = with_sparsity(tiny_cfg, method="adapmtl", alloc_bound=10.0)
    _, method = _attached(cfg)
    method.before_forward(26)
    logm = method.log_magnitudes()
    cost = torch.ones(len(method.groups), dtype=torch.float64)
    cost[0], cost[1] = 100.0, 0.01  # layer 0 is costly to prune, layer 1 cheap
    with torch.no_grad():
        method.grad_ema.copy_(cost * method._density_at_threshold(logm))
    before = method.s.detach().clone()
    method.reallocate(logm)
    moved = method.s.detach() - before
    # tau = rms * exp(s + b): a lower s is a lower threshold (denser), a higher s prunes more
    assert float(moved[0]) < 0 < float(moved[1])
    assert float(moved[0]) == min(moved.tolist()) and float(moved[1]) == max(moved.tolist())


def test_default_is_static_and_adaptive_is_an_option():
    from trainers.sparsity.methods import METHODS

    assert METHODS["adapmtl"].weighting == "static"
    assert METHODS["adapmtl_adaptive"].weighting == "adaptive"
    # the default's ablations differ from it in one thing only: not in the weighting
    for name in ("adapmtl_component", "adapmtl_hierarchical", "adapmtl_layer", "adapmtl_static"):
        assert METHODS[name].weighting == "static"
