"""report.md and its PNG plots: canned run directories (full, train-only, empty, corrupt), plot failures,
TensorBoard scalars, and the real train stage feeding the report."""

from __future__ import annotations

import json
import math
import sys
import types
from pathlib import Path

import pytest

from pipeline.artifacts import MANIFEST_SCHEMA, RunDir
from pipeline.report import build_run_report, markdown, plots, write_run_report
from pipeline.report.markdown import FIGURES, PLOTS_DIR, write_markdown_report, write_tensorboard

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STAGES = ("train", "harden", "export", "validate", "build")
COMPONENTS = {"backbone": 0.9312, "seg": 0.8876, "depth": 0.8421, "normal": 0.9055}
HARDENED = {"backbone": 0.9301, "seg": 0.8765, "depth": 0.8123, "normal": 0.9044}
THRESHOLDS = {"backbone": 1.9521, "seg": 1.6931, "depth": 1.3509, "normal": 1.5638}
TASKS = ("seg", "depth", "normal")
DENSE = {
    "seg": {"miou": 20.0, "pix_acc": 50.0},
    "depth": {"abs_err": 0.60, "rel_err": 0.25, "delta1": 60.0, "delta2": 85.0, "delta3": 95.0},
    "normal": {"mean": 18.0, "median": 16.0, "within_11_25": 30.0, "within_22_5": 70.0, "within_30": 85.0},
}
TRAINED = {
    "seg": {"miou": 19.0, "pix_acc": 49.0},
    "depth": {"abs_err": 0.62, "rel_err": 0.24, "delta1": 58.0, "delta2": 84.0, "delta3": 95.5},
    "normal": {"mean": 18.5, "median": 16.4, "within_11_25": 29.0, "within_22_5": 69.0, "within_30": 84.0},
}
PRUNED = {
    "seg": {"miou": 18.5, "pix_acc": 48.0},
    "depth": {"abs_err": 0.63, "rel_err": 0.245, "delta1": 57.0, "delta2": 84.5, "delta3": 95.2},
    "normal": {"mean": 18.7, "median": 16.6, "within_11_25": 28.5, "within_22_5": 68.0, "within_30": 84.2},
}


# -- canned run directory ------------------------------------------------------------------------------
def _write(root: Path, rel: str, obj) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(obj, indent=1))


def _layers() -> list[dict]:
    layers = []
    for i in range(6):
        layers.append({"name": f"backbone.layer{i}.conv", "component": "backbone", "shape": [32, 16, 3, 3]})
    for t in TASKS:
        layers += [
            {"name": f"heads.{t}.aspp.conv1", "component": t, "shape": [32, 32, 3, 3]},
            {"name": f"heads.{t}.aspp.conv2", "component": t, "shape": [8, 30, 1, 1]},
            {"name": f"heads.{t}.classifier", "component": None, "shape": [3, 32, 1, 1]},
        ]
    for e in layers:
        e["rule"] = "backbone.* -> backbone" if e["component"] == "backbone" else "heads.*"
        e["params"] = math.prod(e["shape"])
    return layers


def _timeseries(n: int = 10) -> dict:
    points = []
    for i in range(n):
        f = min(1.0, i / (n - 3))
        points.append({
            "step": i * 5,
            "lr": 1e-3 * (1 - i / n),
            "losses": {"seg": 1.8 - 0.05 * i, "depth": 1.0 - 0.04 * i, "normal": 1.1 - 0.08 * i},
            "task_weights": {"seg": 1.0 - 0.05 * i, "depth": 1.0 + 0.03 * i, "normal": 1.0 + 0.02 * i},
            "sparsity": {
                "target": 0.9 * f,
                "overall": 0.9 * f * 0.98,
                "components": {c: v * f for c, v in COMPONENTS.items()},
            },
            "thresholds": {c: 1e-5 + v * f for c, v in THRESHOLDS.items()},
        })
    return {"threshold_kind": "tau / rms(W)", "points": points}


def make_run(root: Path, stages=STAGES, build_status: str = "skipped") -> RunDir:
    """A run directory holding the files each stage in `stages` writes, plus a matching manifest."""
    layers = _layers()
    entries = {}
    for i, s in enumerate(stages):
        status = build_status if s == "build" else "ok"
        reason = "TensorRT is not installed (pip install tensorrt)" if status == "skipped" else None
        entries[s] = {"status": status, "reason": reason, "seconds": 1.5 + i,
                      "started_at": f"2025-01-01T00:0{i}:00+00:00"}
    _write(root, "manifest.json", {"schema": MANIFEST_SCHEMA, "run_id": root.name, "stages": entries})
    if "train" in stages:
        trained_layers = [
            e | {"sparsity": (COMPONENTS[e["component"]] if e["component"] else 0.0)} for e in layers
        ]
        _write(root, "train/timeseries.json", _timeseries())
        _write(root, "train/sparsity.json", {
            "method": "adapmtl", "target": 0.9, "overall": 0.90012, "overshoot": 0.00012,
            "components": COMPONENTS, "component_params": {"backbone": 27648, "seg": 9456, "depth": 9456,
                                                           "normal": 9456},
            "thresholds": THRESHOLDS, "threshold_kind": "tau / rms(W)", "prunable_params": 56016,
            "dense_params": 864, "overall_all_convs": 0.886, "layers": trained_layers,
        })
        _write(root, "train/metrics.json", {
            "metrics": TRAINED, "reference": {"dense": DENSE, "dense_source": "train/reference"},
        })
    if "harden" in stages:
        hl = []
        for e in layers:
            if e["component"] is None:
                pat, sp, reason = "dense", 0.0, "left dense by rule"
            elif e["name"].endswith("conv1"):
                pat, sp, reason = "2:4", 0.5 + 0.4 * HARDENED[e["component"]] / 2, "2:4"
            elif e["name"].endswith("conv2"):
                pat, sp, reason = "unstructured", HARDENED[e["component"]], "skipped: in-channels % 16 != 0"
            else:
                pat, sp, reason = "unstructured", HARDENED[e["component"]], "unstructured"
            hl.append({k: e[k] for k in ("name", "component", "rule", "shape")}
                      | {"pattern": pat, "sparsity": sp, "eligible_2_4": pat == "2:4", "reason": reason})
        _write(root, "harden/sparsity.json", {
            "pattern": "adaptive-2:4", "target": 0.9, "overall": 0.8931, "components": HARDENED,
            "trained_overall": 0.90012, "soft_vs_hardened_max_abs": 1e-6, "bn_folded": ["backbone.bn1"],
            "bn_fold_max_abs": 2e-7, "pattern_counts": {"2:4": 3, "unstructured": 9, "dense": 3},
            "pattern_check": "passed", "finetune": None, "layers": hl,
        })
        _write(root, "harden/metrics.json", {"metrics": PRUNED, "trained_metrics_source": "train/metrics.json"})
    if "export" in stages:
        _write(root, "export/checks.json", {
            "onnx": "export/model.onnx", "opset": 18, "exporter": "torch.onnx (dynamo)", "size_bytes": 3_456_789,
            "compressed_bytes": 456_789, "sparsity_survived": True,
            "zero_pattern": {"passed": True, "mismatched": [],
                             "pairs": [{"onnx_name": f"w{i}", "zeros_lost": 0} for i in range(30)]},
            "outputs": ["seg", "depth", "normal"],
        })
    if "validate" in stages:
        _write(root, "validate/report.json", {
            "passed": True,
            "heads": {t: {"passed": True, "max_abs": 1.5e-5, "mean_abs": 2e-7, "atol": 1e-4,
                          "agreement": {"mean_abs_diff": 1e-7}} for t in TASKS},
            "metrics_agree": True, "real_data": None,
        })
    if "build" in stages and build_status != "skipped":
        _write(root, "build/report.json", {"status": build_status, "reason": None,
                                           "engines": {"dense": {"fp16": True}, "sparse": {"fp16": True}},
                                           "latency_ms": {"dense": 1.9, "sparse": 1.4}})
    return RunDir(root)


@pytest.fixture
def stub_plots(monkeypatch):
    """For tests about the Markdown only: every figure function writes a few bytes instead of rendering."""
    names = [n for n in plots.__all__ if n.startswith("plot_")]
    for n in names:
        monkeypatch.setattr(plots, n, lambda *a, **k: next(x for x in a if isinstance(x, Path)).write_bytes(b"stub"))
    return names


def _check_png(path: Path, min_bytes: int = 5000) -> None:
    assert path.exists(), path
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert len(data) > min_bytes, f"{path} is suspiciously small ({len(data)} bytes)"


# -- full run ------------------------------------------------------------------------------------------
def test_full_run_report(tmp_path):
    run = make_run(tmp_path / "run")
    report = write_run_report(run)  # report.json, then report.md through the optional hook
    md_path = run.root / "report.md"
    assert md_path.exists() and (run.root / "report.json").exists()
    md = md_path.read_text()

    assert md.startswith("# Run report: run")
    # verdicts, with the skip reason
    assert "| `train` | passed | 1.5 |" in md
    assert "| `validate` | passed |" in md
    assert "| `build` | skipped |" in md and "TensorRT is not installed" in md
    # sparsity: per-component trained and hardened numbers, thresholds and their kind, pattern counts
    for c in COMPONENTS:
        assert f"| `{c}` |" in md
        assert f"{COMPONENTS[c]:.4g}" in md and f"{HARDENED[c]:.4g}" in md and f"{THRESHOLDS[c]:.4g}" in md
    assert "threshold (tau / rms(W))" in md
    assert "2:4 3" in md and "adaptive-2:4" in md
    # metrics vs dense, ΔT / Δp from report.json
    assert "pruned (hardened)" in md and "trained (soft)" in md
    assert f"ΔT = {report['delta_t']:+.2f}%" in md and f"Δp = {report['delta_p']:+.2f}%" in md
    # lower-is-better metric got worse: abs_err 0.60 -> 0.63 is -5.00 %
    assert "| `depth` | abs_err ↓ | 0.63 | 0.62 | 0.6 | -5.00% | -3.33% |" in md
    # export / validation / build sections print what exists
    assert "3.30 MiB" in md and "7.57× smaller" in md and "torch.onnx (dynamo)" in md
    assert "<summary>zero_pattern</summary>" in md and "... (26 more)" in md  # long lists cut
    assert "Real data: not checked" in md
    assert "Verdict: **PASSED**" in md and "| `seg` | yes | 1.5e-05 | 2e-07 |" in md
    assert "Status: **skipped**" in md
    # every figure referenced, present, a real PNG
    for name in FIGURES.values():
        assert f"]({PLOTS_DIR}/{name})" in md
        _check_png(run.root / PLOTS_DIR / name)
    assert "plot unavailable" not in md
    # no temp files left beside the outputs
    assert not [p for p in (run.root / PLOTS_DIR).iterdir() if p.suffix != ".png"]
    assert not list(run.root.glob(".report.md*"))


def test_build_ok_details(tmp_path, stub_plots):
    run = make_run(tmp_path / "run", build_status="ok")
    md = write_markdown_report(run, build_run_report(run)).read_text()
    assert "Status: **ok**" in md and "latency_ms" in md and "| `build` | passed |" in md
    assert "5 of 6 stages passed" in md  # quantize not run in this fixture


def test_validation_real_data_and_failures(tmp_path, stub_plots):
    run = make_run(tmp_path / "run")
    parity = {"depth": {"ref": {"abs_err": 1.3637}, "test": {"abs_err": 1.3638}, "delta": {"abs_err": 1e-4},
                        "passed": False}}
    _write(run.root, "validate/report.json", {
        "passed": False,
        "heads": {"seg": {"name": "seg", "passed": True, "max_abs": 1e-7, "detail": ""},
                  "depth": {"name": "depth", "passed": False, "max_abs": 0.3, "detail": ""}},
        "metrics_agree": False,
        "real_data": {"source": "/data/nyu50", "samples": 4, "passed": False,
                      "heads": {"depth": {"passed": False, "max_abs": 0.2}}, "parity": parity,
                      "seg_compared_as": "argmax agreement only"},
    })
    md = write_markdown_report(run, build_run_report(run)).read_text()
    body = md.split("## Validation", 1)[1].split("\n## ", 1)[0]
    assert "Verdict: **FAILED**" in body and "Task metrics agree: **no**." in body
    assert "| head | passed | max_abs |" in body and "| name |" not in body and "detail" not in body
    assert "| `depth` | **no** | 0.3 |" in body
    assert "source `/data/nyu50`, 4 samples, passed: **no**." in body
    assert "| `depth` | abs_err | 1.3637 | 1.3638 | 0.0001 | **no** |" in body
    assert "argmax agreement only" in body


# -- partial / empty / corrupt runs --------------------------------------------------------------------
def test_train_only_run(tmp_path):
    run = make_run(tmp_path / "run", stages=("train",))
    report = build_run_report(run)
    md = write_markdown_report(run, report).read_text()
    assert "| `harden` | not run |" in md and "| `build` | not run |" in md
    for section in ("## Export (ONNX)", "## Validation (ONNX Runtime vs PyTorch)", "## Build (TensorRT)"):
        body = md.split(section, 1)[1].split("\n## ", 1)[0]
        assert "not run" in body, section
    assert "not hardened: harden stage not run" in md
    assert "pruned (trained, not hardened)" in md
    for c, v in COMPONENTS.items():
        assert f"| `{c}` |" in md and f"{v:.4g}" in md
    for key in ("sparsity", "thresholds", "task_weights", "layers", "metrics"):
        _check_png(run.root / PLOTS_DIR / FIGURES[key])


def test_train_only_without_dense_reference_skips_metrics_figure(tmp_path, stub_plots):
    run = make_run(tmp_path / "run", stages=("train",))
    _write(run.root, "train/metrics.json", {"metrics": TRAINED})
    md = write_markdown_report(run, build_run_report(run)).read_text()
    assert "no dense reference" in md and "ΔT =" not in md
    assert FIGURES["metrics"] not in md
    assert not (run.root / PLOTS_DIR / FIGURES["metrics"]).exists()


def test_empty_run_directory(tmp_path):
    run = RunDir(tmp_path / "empty")
    md = write_markdown_report(run, build_run_report(run)).read_text()
    assert "0 of 6 stages passed" in md
    assert md.count("not run") >= 9  # five verdict rows plus every section
    assert "![" not in md


def test_corrupt_timeseries_is_noted_not_fatal(tmp_path, stub_plots):
    run = make_run(tmp_path / "run", stages=("train",))
    (run.root / "train" / "timeseries.json").write_text('{"threshold_kind": "tau", "points": [{"st')
    md = write_markdown_report(run, build_run_report(run)).read_text()
    assert "train/timeseries.json is unreadable" in md
    assert FIGURES["sparsity"] not in md and FIGURES["layers"] in md


def test_failed_stage_reason_in_verdicts(tmp_path, stub_plots):
    run = make_run(tmp_path / "run", stages=("train", "harden", "export"))
    m = json.loads(run.manifest_path.read_text())
    m["stages"]["export"] |= {"status": "failed", "reason": "zero pattern lost in 2 | 15 layers\nsee checks"}
    run.manifest_path.write_text(json.dumps(m))
    (run.root / "export" / "checks.json").unlink()
    md = write_markdown_report(run, build_run_report(run)).read_text()
    assert "| `export` | **FAILED** |" in md
    assert "zero pattern lost in 2 \\| 15 layers<br>see checks" in md  # escaped inside the table
    assert "failed: `export`" in md


# -- plot failures -------------------------------------------------------------------------------------
def test_plot_failure_is_noted_and_report_still_written(tmp_path, monkeypatch, caplog):
    run = make_run(tmp_path / "run")
    write_markdown_report(run, build_run_report(run))
    stale = run.root / PLOTS_DIR / FIGURES["thresholds"]
    assert stale.exists()

    def boom(*a, **k):
        raise RuntimeError("boom in thresholds")

    monkeypatch.setattr(plots, "plot_thresholds_over_steps", boom)
    with caplog.at_level("WARNING"):
        md = write_markdown_report(run, build_run_report(run)).read_text()
    assert "_plot unavailable: RuntimeError: boom in thresholds_" in md
    assert "boom in thresholds" in caplog.text
    assert not stale.exists()  # an out-of-date figure is not left behind
    for key in ("sparsity", "task_weights", "layers", "metrics"):
        _check_png(run.root / PLOTS_DIR / FIGURES[key])


def test_matplotlib_missing_gives_notes_for_every_figure(tmp_path, monkeypatch):
    run = make_run(tmp_path / "run")
    for mod in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    md = write_markdown_report(run, build_run_report(run)).read_text()
    assert md.count("plot unavailable: ") == len(FIGURES)
    assert "## Metrics: pruned vs dense" in md


def test_markdown_assembly_bugs_are_not_hidden(tmp_path, stub_plots):
    run = make_run(tmp_path / "run", stages=("train",))
    report = build_run_report(run)
    report["stages"] = ["not", "a", "mapping"]  # a caller bug: must raise, not turn into a note
    with pytest.raises(AttributeError):
        write_markdown_report(run, report)


# -- plots on their own --------------------------------------------------------------------------------
def test_relative_change_signs_and_gaps():
    ch = plots.relative_change_pct(
        {"depth": {"abs_err": 0.5, "delta1": 66.0}, "seg": {"miou": 10.0}, "foo": {"x": 1.0}},
        {"depth": {"abs_err": 0.6, "delta1": 60.0}, "seg": {"miou": 0.0}},
    )
    assert ch == {"depth": {"abs_err": pytest.approx(100 / 6), "delta1": pytest.approx(10.0)}}


def test_plot_inputs_that_cannot_make_a_figure(tmp_path):
    with pytest.raises(ValueError, match="no timeseries points"):
        plots.plot_sparsity_over_steps([], tmp_path / "a.png")
    with pytest.raises(ValueError, match="no thresholds"):
        plots.plot_thresholds_over_steps([{"step": 0, "thresholds": {}}], tmp_path / "b.png", "none")
    with pytest.raises(ValueError, match="dense"):
        plots.plot_metrics_vs_dense({"pruned": PRUNED}, None, tmp_path / "c.png")
    assert not list(tmp_path.iterdir())


def test_many_layers_and_ragged_timeseries(tmp_path):
    layers = [{"name": f"backbone.stage{i // 10}.block{i % 10}.conv", "component": ("backbone", "seg")[i % 2],
               "sparsity": (i % 10) / 10, "pattern": ("dense", "unstructured", "2:4")[i % 3]} for i in range(110)]
    p = plots.plot_layer_sparsity(layers, tmp_path / "layers.png", trained={layers[0]["name"]: 0.3}, target=0.9)
    _check_png(p, min_bytes=20000)
    # components appearing late, a threshold at zero (linear axis), a missing point value
    pts = _timeseries(6)["points"]
    pts[0]["thresholds"] = {"backbone": 0.0}
    pts[3]["sparsity"]["components"]["extra"] = 0.5
    del pts[4]["sparsity"]["overall"]
    _check_png(plots.plot_thresholds_over_steps(pts, tmp_path / "t.png", "magnitude cut"))
    _check_png(plots.plot_sparsity_over_steps(pts, tmp_path / "s.png"))
    _check_png(plots.plot_task_weights_over_steps(pts, tmp_path / "w.png"))


# -- TensorBoard ---------------------------------------------------------------------------------------
def test_tensorboard_absent_returns_none(tmp_path, monkeypatch):
    run = make_run(tmp_path / "run", stages=("train",))
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    assert write_tensorboard(run) is None
    assert not (run.root / markdown.TENSORBOARD_DIR).exists()


def test_tensorboard_scalars_with_a_stand_in_writer(tmp_path, monkeypatch):
    calls: list[tuple[str, float, int]] = []

    class FakeWriter:
        def __init__(self, log_dir):
            Path(log_dir).mkdir(parents=True)
            self.closed = False

        def add_scalar(self, tag, value, step):
            calls.append((tag, value, step))

        def close(self):
            calls.append(("closed", 0.0, 0))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))
    run = make_run(tmp_path / "run")
    out = write_tensorboard(run, build_run_report(run))
    assert out == run.root / "tensorboard" and out.is_dir()
    tags = {t for t, _, _ in calls}
    assert {"sparsity/overall", "sparsity/target", "sparsity/backbone", "threshold/seg", "task_weight/depth",
            "loss/normal", "lr", "metrics_pruned/seg.miou", "summary/delta_t"} <= tags
    assert [s for t, _, s in calls if t == "sparsity/overall"] == list(range(0, 50, 5))
    assert calls[-1][0] == "closed"


# -- the real pipeline feeds the report ---------------------------------------------------------------
def test_cli_run_all_until_train_writes_report(tmp_path, monkeypatch):
    """Real trainer output (tiny preset, dense reference trained alongside) through `pipeline run all`, then
    `pipeline report` regenerates report.md."""
    from click.testing import CliRunner

    from pipeline.cli import main

    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "r"
    res = CliRunner().invoke(main, ["run", "all", "--config", "tiny", "--run-dir", str(run_dir), "--until", "train",
                                    "--no-progress", "--set", "train.steps=12"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    md_path = run_dir / "report.md"
    md = md_path.read_text()
    report = json.loads((run_dir / "report.json").read_text())
    sp = json.loads((run_dir / "train" / "sparsity.json").read_text())
    assert "| `train` | passed |" in md and "| `harden` | not run |" in md
    for c, v in sp["components"].items():
        assert f"| `{c}` |" in md and f"{v:.4g}" in md, c
    assert f"threshold ({sp['threshold_kind']})" in md
    assert report["delta_t"] is not None and f"ΔT = {report['delta_t']:+.2f}%" in md
    assert "plot unavailable" not in md
    for key in FIGURES:
        _check_png(run_dir / PLOTS_DIR / FIGURES[key])

    md_path.unlink()
    res = CliRunner().invoke(main, ["report", "--run-dir", str(run_dir)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert md_path.read_text() == md
