"""The console script refuses, in one line, to start without an ONNX Runtime (a bare `pip install .`)."""

from __future__ import annotations

import importlib.util

import pytest

from pipeline import entry


def test_missing_onnxruntime_is_one_line_exit_1(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(SystemExit) as exc:
        entry.main()
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install '.[cpu]'" in err


def test_with_onnxruntime_the_cli_runs(monkeypatch):
    called = []
    monkeypatch.setattr("pipeline.cli.main", lambda: called.append(True))
    entry.main()
    assert called == [True]
