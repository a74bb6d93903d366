"""Columns that only repeat others are dropped; the constant-predictor floor and a recorded ΔT band are shown."""

from __future__ import annotations

from pipeline.report.markdown_format import Figures
from pipeline.report.sections_training import metrics_section, same_shown

M = {"seg": {"miou": 50.0, "pix_acc": 80.0}}
DENSE = {"seg": {"miou": 51.0, "pix_acc": 80.5}}
CONST = {"seg": {"miou": 5.8, "pix_acc": 40.6}}


def _report(trained, **extra):
    return {"stages": {"harden": {"status": "ok"}}, "delta_t": -1.0, "delta_p": -0.5,
            "metrics": {"pruned": M, "trained": trained, "dense": DENSE, "constant_predictor": CONST}, **extra}


def test_trained_column_only_when_it_differs(tmp_path):
    same = metrics_section(_report({"seg": {"miou": 50.0000001, "pix_acc": 80.0}}), Figures(tmp_path))
    assert "trained (soft)" not in same.splitlines()[4] and "not repeated" in same
    differs = metrics_section(_report({"seg": {"miou": 49.0, "pix_acc": 80.0}}), Figures(tmp_path))
    assert "trained (soft)" in differs and "not repeated" not in differs


def test_constant_predictor_column_and_noise_band(tmp_path):
    md = metrics_section(_report(M, delta_t_noise=0.8), Figures(tmp_path))
    assert "constant predictor" in md and "| 5.8 |" in md
    assert "±0.80 points" in md
    assert "±" not in metrics_section(_report(M), Figures(tmp_path))


def test_same_shown():
    assert same_shown({"a": 0.899998}, {"a": 0.8999979})
    assert not same_shown({"a": 0.9}, {"a": 0.8})
    assert not same_shown({"a": 1.0}, {"b": 1.0})
