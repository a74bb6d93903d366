"""Side-by-side latency table: one row per (model, batch, threads), ratios against the first model, sizes."""

from __future__ import annotations

import gzip

import pytest

from deploy.latency_table import file_sizes, format_latency_table, latency_table
from pipeline.errors import MissingArtifactError, PipelineError


def test_table_shape(setup):
    models = {"a_fp32": setup.fp32, "b_fp32": setup.fp32}
    table = latency_table(
        models, setup.calib.shape[1:], batches=(1, 2), threads=(1, 2), warmup=1, rounds=2, iters_per_round=2
    )
    rows = table["rows"]
    assert len(rows) == 2 * 2 * 2
    assert {(r["model"], r["batch"], r["threads"]) for r in rows} == {
        (m, b, t) for m in models for b in (1, 2) for t in (1, 2)
    }
    for r in rows:
        assert r["n"] == 4 and 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
        if r["model"] == "a_fp32":
            assert r["ratio_p50"] == 1.0
    assert table["sizes"]["a_fp32"] == file_sizes(setup.fp32)
    md = format_latency_table(table)
    assert md.count("| a_fp32 |") == 5 and "vs a_fp32" in md


def test_sizes(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"\0" * 10000)
    s = file_sizes(p)
    assert s["raw_bytes"] == 10000 and s["gzip_bytes"] == len(gzip.compress(p.read_bytes(), 9, mtime=0)) < 100


def test_bad_input(setup, tmp_path):
    with pytest.raises(MissingArtifactError, match="'int8'"):
        latency_table({"int8": tmp_path / "none.onnx"}, (3, 8, 8))
    with pytest.raises(PipelineError):
        latency_table({}, (3, 8, 8))
