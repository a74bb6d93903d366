"""Channel pruning, training side: the group soft threshold, the MAC controller, the L1 baselines, exactness."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.config import SparsityConfig
from pipeline.errors import ConfigError
from pipeline.models.channels import compact_, model_macs, zero_channels_
from pipeline.models.registry import create_model
from trainers.sparsity.harden import harden_
from trainers.sparsity.layers import ChannelTie, make_sparse_
from trainers.sparsity.methods import build_method, methods_for

TASKS = {"seg": 4, "depth": 1, "normal": 3}


def _cfg(method: str, target: float, structure: str = "channel") -> SparsityConfig:
    return SparsityConfig(method=method, target=target, update_every=2, structure=structure)


def _setup(method: str, target: float, steps: int = 12, seed: int = 0):
    torch.manual_seed(seed)
    model = create_model("tiny_mtl", TASKS)
    x = torch.rand(2, 3, 16, 24)
    m, _ = build_method(_cfg(method, target), steps)
    m.attach(model, list(TASKS), example=x[:1])
    return model, m, x


def _train(model, m, x, steps: int) -> None:
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for step in range(steps):
        m.before_forward(step)
        loss = sum(v.pow(2).mean() for v in model(x).values())
        loss.backward()
        m.after_backward(step)
        opt.step()
        opt.zero_grad()
        m.after_optimizer_step(step)
    m.finalize()


def _one_channel(m) -> float:
    """The largest MAC fraction one channel of any group removes at the final state (the controller's grain)."""
    removed = m.space.removed_counts()
    return float(m.space.marginal_macs(removed).max()) / m.space.total


def _compacted_fraction(model, m, x) -> float:
    keep = m.channel_keep()
    dense = model_macs(model, x[:1])
    harden_(m)
    zero_channels_(model, m.space.groups, keep)
    compact_(model, x[:1], keep)
    return 1.0 - model_macs(model, x[:1]) / dense


@pytest.mark.parametrize("method", ["adapmtl", "channel_soft_uniform", "l1_global"])
def test_mac_target_met_at_finalize_and_equals_the_compacted_model(method):
    model, m, x = _setup(method, 0.5)
    _train(model, m, x, 12)
    achieved = m.measure()["overall"]
    assert abs(achieved - 0.5) <= _one_channel(m) + 1e-12, (achieved, _one_channel(m))
    # the exact MAC count is the compacted model's, not a per-channel estimate
    assert _compacted_fraction(model, m, x) == pytest.approx(achieved, abs=1e-9)


def test_group_soft_threshold_shrinks_tied_filters_and_its_gradient():
    torch.manual_seed(0)
    a, b = (make_sparse_(nn.Conv2d(3, 5, 3), "backbone"), make_sparse_(nn.Conv2d(4, 5, 1), "backbone"))
    tie = ChannelTie([a, b])
    a.channel = b.channel = tie
    norms = tie.norms().detach()
    tau = torch.tensor(float(norms.sort().values[2]), requires_grad=True)  # prunes the 3 weakest of 5
    tie.tau = tau
    wa, wb = a.effective_weight(), b.effective_weight()
    new_norms = (wa.pow(2).flatten(1).sum(1) + wb.pow(2).flatten(1).sum(1)).sqrt()
    kept = norms > tau.detach()
    assert int(kept.sum()) == 2
    assert torch.all(wa[~kept] == 0) and torch.all(wb[~kept] == 0)  # pruned in every tied conv at once
    assert torch.allclose(new_norms[kept], norms[kept] - tau.detach(), atol=1e-6)  # survivors shrink by tau
    # d/dtau of the survivors' squared norms: -2 (n_f - tau) each; a larger threshold always costs norm
    (wa.pow(2).sum() + wb.pow(2).sum()).backward()
    expected = -2 * (norms[kept] - tau.detach()).sum()
    assert tau.grad is not None and float(tau.grad) < 0
    assert float(tau.grad) == pytest.approx(float(expected), rel=1e-4)


def test_a_group_keeps_its_strongest_channel_whatever_the_threshold():
    torch.manual_seed(0)
    conv = make_sparse_(nn.Conv2d(3, 6, 3), "backbone")
    tie = ChannelTie([conv])
    conv.channel = tie
    tie.tau = torch.tensor(1e6)
    kept = tie.kept()
    assert int(kept.sum()) == 1 and bool(kept[torch.argmax(tie.norms().detach())])


def test_highest_reachable_target_leaves_one_channel_per_group_and_more_is_refused():
    model, m, x = _setup("l1_global", 0.5)
    reachable = m.space.removed_fraction(m.space.max_removable())
    m.cfg = _cfg("l1_global", reachable)
    m.finalize()
    info = m.measure()["channels"]
    assert all(g["kept"] == 1 for g in info["groups"])
    assert len(info["at_one_channel"]) == len(info["groups"])
    with pytest.raises(ConfigError, match="at most"):
        _setup("l1_global", min(0.999, reachable + 0.01))


def test_l1_uniform_removes_the_same_fraction_of_every_group():
    model, m, x = _setup("l1_uniform", 0.4)
    _train(model, m, x, 4)
    rate = m.cut["channel_rate"]
    sizes = m.space.sizes
    removed = m.space.removed_counts()
    assert torch.all((removed - rate * sizes).abs() <= 0.5 + 1e-9)  # one rate, rounded per group
    same = sizes == sizes.max()
    assert len(set(removed[same].tolist())) == 1 and float(removed.sum()) > 0
    # and the MAC fraction is the closest a single rate gets to the target
    assert abs(m.measure()["overall"] - 0.4) < 0.1


def test_trained_gated_model_equals_the_zeroed_and_the_compacted_model():
    model, m, x = _setup("adapmtl", 0.5)
    _train(model, m, x, 6)
    model.train()  # batch statistics: a removed channel must be 0 after its BN in training mode too
    with torch.no_grad():
        y_train = model(x)
    model.eval()
    with torch.no_grad():
        y = model(x)
    keep = m.channel_keep()
    assert any(len(k) < g.size for k, g in zip(keep.values(), m.space.groups))
    for name, k in keep.items():  # removed channels are exact zeros after every BN of their group
        tie = m.space.ties[name]
        assert bool(torch.all(tie.gate[k])) and int(tie.gate.sum()) == len(k)
    harden_(m)
    zero_channels_(model, m.space.groups, keep)
    with torch.no_grad():
        y_zero = model(x)
    assert all(torch.equal(y[t], y_zero[t]) for t in y)
    compact_(model, x[:1], keep)
    with torch.no_grad():
        y_small = model(x)
    assert all(torch.allclose(y[t], y_small[t], atol=1e-5) for t in y)
    assert all(torch.isfinite(v).all() for v in y_train.values())


def test_structure_selects_the_implementation_and_mismatches_are_one_line_errors():
    with pytest.raises(ConfigError, match="structure=channel"):
        build_method(_cfg("l1_uniform", 0.5, "unstructured"), 10)
    with pytest.raises(ConfigError, match="l1_global"):
        build_method(_cfg("str", 0.5, "channel"), 10)
    channel = methods_for("channel")
    assert {"adapmtl", "l1_uniform", "l1_global", "channel_soft_uniform", "dense"} <= set(channel)
    assert "gmp_global" not in channel and "l1_uniform" not in methods_for("unstructured")
