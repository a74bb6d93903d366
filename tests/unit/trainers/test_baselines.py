"""The paper's baselines and real STR in the one loop: SNIP, IMP with rewinding, STR; the faithful mode's dynamics."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import with_sparsity
from tests.unit.trainers.test_controller import _train
from trainers.sparsity.sigmoid import STR_S_INIT, str_initial_s


def test_snip_masks_hit_the_target_and_stay_fixed(tiny_cfg):
    method, trainer = _train(with_sparsity(tiny_cfg, method="snip", target=0.8), steps=12)
    m = method.measure()
    assert m["overall"] == pytest.approx(0.8, abs=1e-3)
    # the mask decided at initialisation is the one at the end: every masked weight is still exactly zero
    for layer in method.layers.values():
        assert bool((layer.weight[~layer.mask] == 0).all())
    assert trainer.timeseries[0]["sparsity"]["overall"] == pytest.approx(0.8, abs=1e-3)  # pruned before step 0


def test_imp_prunes_progressively_and_rewinds(tiny_cfg):
    cfg = with_sparsity(tiny_cfg, method="imp", target=0.9, imp_rounds=3)
    cfg = cfg.__class__(**{**cfg.__dict__, "train": cfg.train.__class__(**{**cfg.train.__dict__, "log_every": 1})})
    method, trainer = _train(cfg, steps=40)
    assert method.phase == 10 and method.rewind_step == 1
    overall = [p["sparsity"]["overall"] for p in trainer.timeseries]
    at = {p["step"]: p["sparsity"]["overall"] for p in trainer.timeseries}
    assert at[5] == pytest.approx(0.0, abs=0.01)  # dense first phase
    expected = [1 - 0.1 ** (r / 3) for r in (1, 2, 3)]
    for r, want in zip((1, 2, 3), expected):
        assert at[10 * r] == pytest.approx(want, abs=0.01), (r, at[10 * r])
    assert all(b >= a - 1e-9 for a, b in zip(overall, overall[1:]))  # never less sparse than before
    assert method.measure()["overall"] == pytest.approx(0.9, abs=1e-3)
    # rewinding: the survivors restarted from their values at the rewind step, not from the trained weights
    assert method.round == 3 and set(method.rewind) == set(method.layers)


def test_imp_rewind_restores_the_saved_weights(tiny_cfg):
    from tests.unit.trainers.test_rules import _attached

    _, method = _attached(with_sparsity(tiny_cfg, method="imp", target=0.75, imp_rounds=1), steps=200)
    assert method.phase == 100 and method.rewind_step == 10
    method.before_forward(10)  # the rewind point: the weights are saved
    saved = {n: w.clone() for n, w in method.rewind.items()}
    with torch.no_grad():
        for layer in method.layers.values():
            layer.weight.mul_(1.5)  # "training" after the rewind point (keeps the magnitude order)
    method.before_forward(100)  # round 1: prune and rewind
    assert method.measure()["overall"] == pytest.approx(0.75, abs=1e-3)
    for n, layer in method.layers.items():
        assert torch.equal(layer.weight.detach(), saved[n] * layer.mask)


def test_str_thresholds_are_learned_and_prune(tiny_cfg):
    cfg = with_sparsity(tiny_cfg, method="str", target=0.9, str_init=-6.0, threshold_lr=0.05)
    method, _ = _train(cfg, steps=30)
    s = method.s.detach()
    assert s.shape == (len(method.layers),)  # one threshold per layer
    assert bool((s > -6.0 + 0.5).all())  # the decay raised every threshold (no controller moved them)
    assert method.measure()["overall"] > 0.05
    assert len(set(s.tolist())) > 1  # learned per layer: the loss gradient differs between layers


def test_str_initial_threshold_table():
    lo, hi = min(STR_S_INIT), max(STR_S_INIT)
    assert str_initial_s(lo - 0.1) == STR_S_INIT[lo] and str_initial_s(hi + 0.01) == STR_S_INIT[hi]
    mid = (0.5 + 0.9) / 2
    assert str_initial_s(mid) == pytest.approx((STR_S_INIT[0.5] + STR_S_INIT[0.9]) / 2)


def test_faithful_mode_runs_the_official_optimizer_and_decays_everything(tiny_cfg):
    cfg = with_sparsity(tiny_cfg, method="adapmtl_faithful", target=0.99, init=-9.0, faithful_decay=1e-3)
    method, trainer = _train(cfg, steps=10)
    assert trainer.cfg.betas == (0.5, 0.999) and trainer.cfg.lr_schedule == "step"
    assert trainer.cfg.step_size == 2 and trainer.cfg.gamma == 0.5  # x0.5 every fifth of the run
    assert not trainer.weighting.normalise_losses
    groups = trainer.optimizer.param_groups
    assert all(g["weight_decay"] == 1e-3 for g in groups)  # one coupled decay: weights and thresholds alike
    assert all(g["lr"] == groups[0]["lr"] for g in groups)  # thresholds at the run's lr
    assert any(p is method.s for g in groups for p in g["params"])
    assert method.frozen_at is None  # 0.99 not reached: never frozen, so s moved (decay pulls it towards 0)
    assert bool((method.s.detach() > -9.0).all())


def test_faithful_freeze_stops_the_thresholds(tiny_cfg):
    cfg = with_sparsity(tiny_cfg, method="adapmtl_faithful", target=0.3, init=-4.5)
    method, _ = _train(cfg, steps=3)  # about 2/3 of the N(0, 0.01) weights are below sigmoid(-4.5) = 0.011
    assert method.frozen_at == 0 and method.frozen_now
    # frozen at every step: Adam skipped s entirely (no loss step, no decay), while the weights trained
    assert bool((method.s.detach() == -4.5).all())
    assert method.measure()["overall"] >= 0.3
