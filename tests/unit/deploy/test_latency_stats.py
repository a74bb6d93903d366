"""latency_stats on a known list; measure's warm-up, count and sync placement."""

from __future__ import annotations

import pytest

from deploy.latency import latency_stats, measure


def test_stats_on_known_samples():
    stats = latency_stats([float(i) for i in range(1, 101)], batch=8)  # 1..100 ms
    assert stats["n"] == 100 and stats["batch"] == 8
    assert stats["mean_ms"] == 50.5 and stats["min_ms"] == 1.0 and stats["max_ms"] == 100.0
    assert stats["p50_ms"] == pytest.approx(50.5)
    assert stats["p90_ms"] == pytest.approx(90.1)
    assert stats["p95_ms"] == pytest.approx(95.05)
    assert stats["p99_ms"] == pytest.approx(99.01)
    assert stats["std_ms"] == pytest.approx(28.866070, rel=1e-6)  # population std of 1..100
    assert stats["throughput_ips"] == pytest.approx(8 * 1000 / 50.5)


def test_single_sample():
    stats = latency_stats([4.0], batch=1)
    assert stats["p99_ms"] == stats["p50_ms"] == 4.0 and stats["std_ms"] == 0.0
    assert stats["throughput_ips"] == 250.0


def test_stats_reject_empty():
    with pytest.raises(ValueError):
        latency_stats([], batch=1)
    with pytest.raises(ValueError):
        latency_stats([1.0], batch=0)


def test_measure_counts_calls_and_syncs_around_each_timed_call():
    events: list[str] = []
    samples = measure(lambda: events.append("fn"), warmup=2, iters=3, sync=lambda: events.append("sync"))
    assert len(samples) == 3 and all(s >= 0 for s in samples)
    assert events == ["fn", "fn"] + ["sync", "fn", "sync"] * 3


def test_measure_without_sync_and_bad_args():
    assert len(measure(lambda: None, warmup=0, iters=5)) == 5
    with pytest.raises(ValueError):
        measure(lambda: None, warmup=0, iters=0)
