"""The cost benchmark's int8 section: three models timed side by side, rendered, merged by --update."""

from __future__ import annotations

import json

import pytest

from benchmarks.cost import cli
from benchmarks.cost import int8 as int8_section
from benchmarks.cost.machine import machine_info


@pytest.fixture
def tiny_size(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(int8_section.INT8_SIZES, "tiny", ("tiny_mtl", 32, 40))


@pytest.mark.slow
def test_int8_section_update_keeps_other_sections(tiny_size, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    earlier = {"command": "python -m benchmarks.cost", "quick": False, "machine": machine_info(1),
               "training": {}, "cpu_effects": None, "finished": "earlier", "inference": None,
               "int8": {"paper": _table()}}
    (out / "results.json").write_text(json.dumps(earlier))
    cli.main(["--sections", "int8", "--int8-sizes", "tiny", "--update", "--out", str(out), "--work",
              str(tmp_path / "work"), "--int8-rounds", "1", "--int8-iters", "1", "--int8-threads", "1"])
    res = json.loads((out / "results.json").read_text())
    assert res["finished"] == "earlier" and res["int8"]["paper"] == _table()  # untouched
    assert res["updates"][-1]["sections"] == ["int8"] and res["updates"][-1]["finished"] != "earlier"
    table = res["int8"]["tiny"]
    assert {(r["model"], r["batch"], r["threads"]) for r in table["rows"]} == {
        (m, b, 1) for m in ("dense_fp32", "pruned_fp32", "pruned_int8") for b in (1, 8)}
    assert table["settings"]["model"] == "tiny_mtl" and table["settings"]["calibration_split"] == "train"
    sizes = table["sizes"]
    assert sizes["pruned_int8"]["raw_bytes"] < sizes["pruned_fp32"]["raw_bytes"] == sizes["dense_fp32"]["raw_bytes"]
    assert sizes["pruned_fp32"]["gzip_bytes"] < sizes["dense_fp32"]["gzip_bytes"]  # the zeros compress
    md = (out / "results.md").read_text()
    assert "### tiny: `tiny_mtl`, 32x40" in md and "### paper: `m`" in md and "Later: sections int8" in md




def _table() -> dict:
    """A finished int8 table as deploy.latency_table writes it (two configurations, two models)."""
    rows = [{"model": m, "batch": b, "threads": t, "p50_ms": p, "p90_ms": p, "p99_ms": p, "ratio_p50": p / d}
            for b, t, d in ((1, 1, 10.0), (8, 2, 40.0)) for m, p in (("dense_fp32", d), ("pruned_int8", d / 2))]
    return {"settings": {"baseline": "dense_fp32", "model": "m", "height": 8, "width": 8, "target": 0.9,
                         "weights": "w", "calibration": "minmax", "rounds": 1, "iters_per_round": 1, "warmup": 0},
            "machine": {"onnxruntime": "x", "provider": "CPU", "cpu_count": 2},
            "sizes": {"dense_fp32": {"raw_bytes": 4e6, "gzip_bytes": 3e6},
                      "pruned_int8": {"raw_bytes": 1e6, "gzip_bytes": 2e5}},
            "rows": rows}


def test_render_int8_summarises_every_model_and_configuration():
    text = "\n".join(int8_section.render_int8({"demo": _table()}))
    assert "| batch 1, 1 thread | batch 8, 2 threads |" in text
    assert "| pruned_int8 | 1.00 MB | 0.20 MB | 5.00 ms (0.50×) | 20.00 ms (0.50×) |" in text
