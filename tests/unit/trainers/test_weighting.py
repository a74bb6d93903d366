"""Adaptive task weighting follows method.md section 5 on a scripted loss sequence."""

from __future__ import annotations

import pytest

from trainers.weighting import AdaptiveLossWeighting, StaticWeighting


def test_warmup_window_and_normalisation():
    w = AdaptiveLossWeighting(["a", "b"], begin=2, window=2)
    seq = [
        {"a": 1.0, "b": 1.0},  # step 0: warm-up
        {"a": 2.0, "b": 1.0},  # step 1: warm-up
        {"a": 1.0, "b": 2.0},  # step 2: d_a = |2-1|/1 = 1,    d_b = |1-2|/2 = 0.5
        {"a": 1.0, "b": 1.0},  # step 3: d_a = 0,              d_b = |2-1|/1 = 1
    ]
    assert w.weights() == {"a": 1.0, "b": 1.0}
    for step, losses in enumerate(seq[:3]):
        w.observe(step, losses)
        assert w.weights() == pytest.approx({"a": 1.0, "b": 1.0})  # window not full yet
    w.observe(3, seq[3])
    # window full: raw a = (1 + 0)/2 = 0.5, b = (0.5 + 1)/2 = 0.75; normalised to sum T = 2
    assert w.weights() == pytest.approx({"a": 2 * 0.5 / 1.25, "b": 2 * 0.75 / 1.25})
    assert sum(w.weights().values()) == pytest.approx(2.0)


def test_normalises_to_number_of_tasks_not_three():
    w = AdaptiveLossWeighting(["a", "b", "c", "d", "e"], begin=0, window=1)
    assert sum(w.weights().values()) == pytest.approx(5.0)
    paper = AdaptiveLossWeighting(["a", "b", "c", "d", "e"], begin=0, window=1, normalise_to=3)
    assert paper.weights()["a"] == pytest.approx(0.6)  # the official code's hard-coded 3


def test_sliding_window_forgets_old_values():
    w = AdaptiveLossWeighting(["a", "b"], begin=0, window=1)
    w.observe(0, {"a": 1.0, "b": 1.0})
    w.observe(1, {"a": 0.5, "b": 1.0})  # d_a = 1, d_b = 0 -> all weight to a
    assert w.weights()["a"] == pytest.approx(2.0)
    w.observe(2, {"a": 0.5, "b": 0.25})  # d_a = 0, d_b = 3 -> all weight to b
    assert w.weights()["b"] == pytest.approx(2.0)


def test_state_round_trip_continues_identically():
    a = AdaptiveLossWeighting(["x", "y"], begin=1, window=3)
    losses = [{"x": 1 + 0.1 * i, "y": 2 - 0.05 * i * i} for i in range(8)]
    for i in range(4):
        a.observe(i, losses[i])
    b = AdaptiveLossWeighting(["x", "y"], begin=1, window=3)
    b.load_state_dict(a.state_dict())
    for i in range(4, 8):
        a.observe(i, losses[i])
        b.observe(i, losses[i])
        assert a.weights() == b.weights()


def test_static_priorities():
    assert StaticWeighting(["a", "b"], {"b": 2.0}).weights() == {"a": 1.0, "b": 2.0}


def test_loss_normalisation_divides_by_running_mean():
    w = StaticWeighting(["a", "b"], normalise_losses=True)
    assert w.loss_multipliers({"a": 2.0, "b": 0.5}) == pytest.approx({"a": 0.5, "b": 2.0})
    w.observe(0, {"a": 4.0, "b": 0.5})  # EMA 0.99: a -> 0.99 * 2 + 0.01 * 4 = 2.02
    assert w.loss_multipliers({"a": 9.0, "b": 9.0})["a"] == pytest.approx(1 / 2.02)
    fresh = StaticWeighting(["a", "b"], normalise_losses=True)
    fresh.load_state_dict(w.state_dict())
    assert fresh.loss_multipliers({"a": 1.0, "b": 1.0}) == w.loss_multipliers({"a": 1.0, "b": 1.0})
    assert StaticWeighting(["a"]).loss_multipliers({"a": 5.0}) == {"a": 1.0}
