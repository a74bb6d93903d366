"""A real channel run (tiny model, channel AdapMTL) through train and harden: MAC counts at the configured input
size, harden's headline `overall` is the MAC fraction the target names, and the soft-vs-hardened check compares
the trained gated model with the compacted one."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from pipeline.artifacts import MANIFEST_SCHEMA, RunDir
from pipeline.checkpoint import TrainCheckpoint, read_checkpoint, write_checkpoint
from pipeline.config import load_config
from pipeline.models.channels import model_macs
from pipeline.models.factory import example_image, rebuild_model
from pipeline.report import build_run_report
from pipeline.report.console import format_key_numbers, format_summary
from trainers import hardening
from trainers.training_run import train_run

TARGET = 0.5


@pytest.fixture(scope="module")
def channel_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("chan")
    # 32x40: not the 64x64 fallback, so MACs traced at the wrong size would show
    cfg = load_config("tiny", ["dense_reference=null", "sparsity.structure=channel", f"sparsity.target={TARGET}",
                               "train.steps=12", "train.checkpoint_every=0",
                               "harden.channel_multiple=1",  # the controller's plan as is (rounding: test_harden_channels)
                               "train.init=default"])  # N(0, 0.01) convs would hide a removed channel's BN bias
    train_run(cfg, out, progress=False)
    ckpt = read_checkpoint(out / "checkpoint.pt", TrainCheckpoint)
    # 12 steps barely move BN biases off 0; a trained model's are not 0, and a removed channel's BN bias is what
    # a check taken before the channels are dropped would see
    gen = torch.Generator().manual_seed(0)
    for k in [k for k in ckpt.state_dict if k.endswith(".running_mean")]:
        bias = ckpt.state_dict[k.replace("running_mean", "bias")]
        bias.add_(torch.randn(bias.shape, generator=gen) * 0.3)
    write_checkpoint(out / "checkpoint.pt", ckpt)
    result = hardening.harden_checkpoint(cfg, ckpt, out / "checkpoint.pt", progress=False)
    return cfg, ckpt, out, result


def _dense_macs(ckpt: TrainCheckpoint, h: int, w: int) -> int:
    model = rebuild_model(ckpt.model).eval()
    return model_macs(model, example_image(model, 1, h, w))


def test_macs_are_counted_at_the_configured_input_size(channel_run) -> None:
    cfg, ckpt, out, result = channel_run
    h, w = cfg.data.height, cfg.data.width
    want = _dense_macs(ckpt, h, w)
    assert want != _dense_macs(ckpt, 64, 64)
    assert ckpt.sparsity["channels"]["dense_macs"] == want  # train's sparsity report
    _, method = hardening.restore_method_model(ckpt, out / "checkpoint.pt")
    assert int(method.space.total) == want  # the restored controller's space
    assert result.report["channels"]["macs_dense"] == want


def test_harden_overall_is_the_mac_fraction_and_parameter_sparsity_is_named(channel_run) -> None:
    _, ckpt, _, result = channel_run
    r = result.report
    ch = r["channels"]
    assert r["overall"] == pytest.approx(ch["mac_fraction_removed"], abs=1e-12)
    assert r["overall"] == pytest.approx(ckpt.sparsity["overall"], abs=1e-6)  # the controller's exact MAC count
    assert ch["mac_fraction_removed_before_rounding"] == pytest.approx(r["overall"], abs=1e-9)
    assert abs(r["overall"] - TARGET) < 0.05
    assert r["overall_kind"] == "mac_fraction"
    assert set(r["components"]) == set(ckpt.sparsity["components"])
    for c, v in r["components"].items():
        assert v == pytest.approx(ckpt.sparsity["components"][c], abs=1e-6)
    # parameter sparsity is reported separately, and is a different number here
    assert 0 < r["param_sparsity"] < 1 and r["param_sparsity"] != pytest.approx(r["overall"], abs=1e-3)
    assert set(r["param_components"]) == set(r["components"])


def test_soft_vs_hardened_compares_the_gated_model_with_the_compacted_one(channel_run) -> None:
    cfg, ckpt, out, result = channel_run
    model, _ = hardening.restore_method_model(ckpt, out / "checkpoint.pt")
    x = example_image(model, 2, cfg.data.height, cfg.data.width)
    with torch.no_grad():
        scale = max(float(v.abs().max()) for v in model(x).values())
    assert result.report["soft_vs_hardened_max_abs"] < 1e-4 * max(scale, 1.0)


def test_run_report_and_console_compare_macs_removed_with_the_target(channel_run, tmp_path) -> None:
    _, _, out, result = channel_run
    stages = {s: {"status": "ok", "reason": None, "seconds": 1.0, "started_at": "2025-01-01T00:00:00+00:00"}
              for s in ("train", "harden")}
    (tmp_path / "train").mkdir()
    (tmp_path / "harden").mkdir()
    (tmp_path / "manifest.json").write_text(json.dumps({"schema": MANIFEST_SCHEMA, "run_id": "r", "stages": stages}))
    shutil.copy(out / "sparsity.json", tmp_path / "train" / "sparsity.json")
    (tmp_path / "harden" / "sparsity.json").write_text(json.dumps(result.report))
    report = build_run_report(RunDir(tmp_path))
    sp = report["sparsity"]
    ch = result.report["channels"]
    assert sp["structure"] == "channel" and sp["overall"] == pytest.approx(ch["mac_fraction_removed"])
    assert sp["param_sparsity"] == pytest.approx(result.report["param_sparsity"])
    assert (sp["macs_dense"], sp["macs_kept"]) == (ch["macs_dense"], ch["macs_compact"])
    text = format_summary(report) + "\n" + format_key_numbers(report)
    assert f"macs_removed={ch['mac_fraction_removed']:.4f}" in text and f"target={TARGET:.3f} (MACs)" in text
    assert "parameters removed" in text and "overall=" not in text
    assert "rounded up" not in text  # channel_multiple=1: the plan as trained, nothing to explain
