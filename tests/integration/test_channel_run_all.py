"""`pipeline run all --config tiny --set sparsity.structure=channel` (issue #17): train with the channel
controller, harden = compact, export a physically smaller ONNX than the unstructured tiny run's, validate it,
quantize it to int8; the summary compares MACs removed with the MAC target. The target is left unset, so the
channel default (a MAC fraction of 0.5, not the unstructured 0.9) is what runs."""

from __future__ import annotations

import json
import math

import onnx
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.config.schema import DEFAULT_TARGET

TARGET = DEFAULT_TARGET["channel"]


def test_channel_run_all_exports_a_smaller_onnx_that_validates(tiny_run, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tiny_run.work)  # reuse the session's scene cache
    monkeypatch.setattr("pipeline.report.markdown.write_markdown_report", lambda run, report: run.root / "report.md")
    run = tmp_path / "chan"
    result = CliRunner().invoke(main, [
        "run", "all", "--config", "tiny", "--no-progress", "--run-dir", str(run),
        "--set", "sparsity.structure=channel",
        "--set", "dense_reference=null", "--set", "quantize.mode=int8"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((run / "report.json").read_text())
    assert report["validation"]["passed"], report["validation"]
    sp = report["sparsity"]
    hard = json.loads((run / "harden" / "sparsity.json").read_text())
    # the controller meets the MAC target; harden then rounds kept channels up to multiples of 8 (zero channels),
    # which on this tiny model gives back a large part of the cut
    assert hard["channels"]["channel_multiple"] == 8
    assert abs(hard["channels"]["mac_fraction_removed_before_rounding"] - TARGET) < 0.05
    assert sp["structure"] == "channel" and 0 < sp["overall"] < hard["channels"]["mac_fraction_removed_before_rounding"]
    assert all(g["kept"] % 8 == 0 or g["kept"] == g["total"] for g in hard["channels"]["groups"])
    assert "kept channels rounded up to multiples of 8" in result.output  # the summary names both fractions
    assert f"macs_removed={sp['overall']:.4f}" in result.output
    assert report["stages"]["quantize"]["status"] == "ok"

    def conv_params(path) -> int:
        model = onnx.load(str(path))
        inits = {i.name: i for i in model.graph.initializer}
        return sum(int(math.prod(inits[n.input[1]].dims)) for n in model.graph.node
                   if n.op_type == "Conv" and n.input[1] in inits)

    chan, unstructured = run / "export" / "model.onnx", tiny_run.run / "export" / "model.onnx"
    assert chan.stat().st_size < 0.9 * unstructured.stat().st_size
    assert conv_params(chan) < conv_params(unstructured)
    assert hard["channels"]["macs_compact"] < hard["channels"]["macs_dense"]
