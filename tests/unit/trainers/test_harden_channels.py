"""Harden = compact (sparsity.structure: channel): zero the dropped channels, fold BN, compact, checkpoint the plan;
`load_hardened` rebuilds the smaller model without training code and the export stage's library call exports it.

The channel plan comes from `StubChannelKeep`, a stand-in method with a hand-made `channel_keep()` (the real
channel method lives in the trainers' sparsity methods); nothing here fakes a result of training.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from exporters.artifact import export_hardened
from exporters.checks import conv_weights_from_onnx
from pipeline.checkpoint import TrainCheckpoint, write_checkpoint
from pipeline.config import ExportConfig, config_to_dict, load_config
from pipeline.errors import ConfigError, PipelineError
from pipeline.models import create_model
from pipeline.models.channels import channel_groups, zero_channels_
from pipeline.models.hardened import load_hardened
from trainers import hardening
from trainers.sparsity.methods import DenseTraining

TASKS = ["seg", "depth", "normal"]


class StubChannelKeep(DenseTraining):
    """A dense method plus a hand-made channel plan: the first `fraction` of every prunable group's channels."""

    name = "dense"

    def __init__(self, cfg, steps, keep):
        super().__init__(cfg, steps)
        self.keep = keep

    def channel_keep(self) -> dict[str, torch.Tensor]:
        return self.keep


def _model(num_classes: int) -> nn.Module:
    model = create_model("tiny_mtl", {"seg": num_classes, "depth": 1, "normal": 3})
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():  # non-trivial BN so that folding and dropping channels both matter
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.2)
    return model.eval()


@pytest.fixture
def setup(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = load_config("tiny", ["dense_reference=null"])
    cfg = dataclasses.replace(base, sparsity=dataclasses.replace(base.sparsity, method="dense", structure="channel"),
                              harden=dataclasses.replace(base.harden, channel_multiple=1))  # the plan as given
    model = _model(cfg.data.num_classes)
    x = model.example_inputs(1, cfg.data.height, cfg.data.width)[0]
    prunable = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and "classifier" not in n]
    groups = channel_groups(model, x, prunable)
    keep = {g.name: torch.arange(0, max(1, g.size // 2 - i % 3)) for i, g in enumerate(groups) if g.prunable}
    ckpt = TrainCheckpoint(
        model=dict(model.spec), state_dict=copy.deepcopy(model.state_dict()), method={"name": "dense", "state": {}},
        tasks=TASKS, num_classes=cfg.data.num_classes, class_names=[f"c{i}" for i in range(cfg.data.num_classes)],
        data={"name": "scenes", "fingerprint": "-", "height": cfg.data.height, "width": cfg.data.width},
        config=config_to_dict(cfg), sparsity={"target": 0.5, "overall": 0.0}, versions={},
    )

    def restore(plan):
        def fn(_ckpt, _source):
            m = copy.deepcopy(model)  # the trained weights the checkpoint holds
            method = StubChannelKeep(cfg.sparsity, 1, plan)
            method.attach(m, TASKS)
            return m.eval(), method
        monkeypatch.setattr(hardening, "restore_method_model", fn)

    return cfg, model, groups, keep, ckpt, restore


def test_harden_compacts_and_load_hardened_rebuilds_the_smaller_model(setup, tmp_path) -> None:
    cfg, model, groups, keep, ckpt, restore = setup
    restore(keep)
    result = hardening.harden_checkpoint(cfg, ckpt, "train/checkpoint.pt", progress=False)
    report = result.report
    ch = report["channels"]
    assert report["structure"] == "channel" and report["pattern_counts"] == {"channel": len(report["layers"]) - 6}
    assert {g["name"]: (g["kept"], g["total"]) for g in ch["groups"]} == {
        g.name: (len(keep[g.name]), g.size) for g in groups if g.prunable}
    assert ch["macs_compact"] < ch["macs_dense"] and ch["params_compact"] < ch["params_dense"]
    assert 0 < ch["mac_fraction_removed"] < 1 and ch["compact_vs_zeroed_max_rel"] < 1e-5
    assert report["bn_folded"] and report["overall"] > 0.4  # removed weights count as pruned
    assert result.checkpoint.channel_plan == {k: v.tolist() for k, v in keep.items()}

    path = tmp_path / "model.pt"
    write_checkpoint(path, result.checkpoint)
    loaded, back = load_hardened(path)
    assert back.channel_plan == result.checkpoint.channel_plan
    convs = dict(loaded.named_modules())
    for g in groups:
        if g.prunable:
            assert all(convs[c].out_channels == len(keep[g.name]) for c in g.convs), g.name
    # the rebuilt model computes what the masked (zeroed) dense model computes
    reference = zero_channels_(copy.deepcopy(model), groups, keep)
    x = torch.rand(2, 3, cfg.data.height, cfg.data.width)
    with torch.no_grad():
        want, got = reference(x), loaded(x)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-5 * float(want[k].abs().max()))

    # the export stage's library call: a physically smaller ONNX whose outputs match PyTorch
    out = tmp_path / "export"
    out.mkdir()
    res = export_hardened(path, out, ExportConfig(), height=cfg.data.height, width=cfg.data.width, source_run="r")
    assert res.checks["sparsity_survived"]
    shapes = sorted(w.shape for w in conv_weights_from_onnx(out / "model.onnx").values())
    assert shapes == sorted(tuple(m.weight.shape) for m in loaded.modules() if isinstance(m, nn.Conv2d))
    dense_shapes = sorted(tuple(m.weight.shape) for m in model.modules() if isinstance(m, nn.Conv2d))
    assert sum(np.prod(s) for s in shapes) < 0.6 * sum(np.prod(s) for s in dense_shapes)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    x1 = x[:1].numpy()
    ort_out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {sess.get_inputs()[0].name: x1})))
    with torch.no_grad():
        torch_out = loaded(x[:1])
    for k in TASKS:
        np.testing.assert_allclose(ort_out[k], torch_out[k].numpy(), rtol=1e-4, atol=1e-4)


def test_a_plan_that_keeps_no_channel_of_a_layer_is_a_one_line_config_error(setup) -> None:
    cfg, _, groups, keep, ckpt, restore = setup
    name = next(g.name for g in groups if g.prunable and g.name.startswith("heads"))
    restore({**keep, name: torch.zeros(0, dtype=torch.int64)})
    with pytest.raises(ConfigError, match=f"remove every channel of layer '{name}'") as e:
        hardening.harden_checkpoint(cfg, ckpt, "train/checkpoint.pt", progress=False)
    assert "\n" not in str(e.value)


def test_a_method_without_a_channel_plan_is_refused(setup, monkeypatch) -> None:
    cfg, _, _, _, ckpt, restore = setup
    restore({})
    monkeypatch.setattr(StubChannelKeep, "channel_keep", None)
    with pytest.raises(PipelineError, match="gives no channel plan"):
        hardening.harden_checkpoint(cfg, ckpt, "train/checkpoint.pt", progress=False)


def test_round_up_kept_pads_with_the_lowest_removed_channels_and_stops_at_the_group_size() -> None:
    from trainers.sparsity.harden import round_up_kept

    assert round_up_kept([3, 9], 16, 8) == [0, 1, 2, 3, 4, 5, 6, 9]
    assert round_up_kept(list(range(8)), 16, 8) == list(range(8))  # already a multiple
    assert round_up_kept([1, 4], 6, 8) == list(range(6))  # never more than the group holds
    assert round_up_kept([5], 16, 1) == [5]


def test_a_channel_multiple_keeps_zero_channels_so_outputs_are_unchanged_and_counts_are_blocked(setup) -> None:
    cfg, model, groups, keep, ckpt, restore = setup
    restore(keep)
    cfg8 = dataclasses.replace(cfg, harden=dataclasses.replace(cfg.harden, channel_multiple=8))
    result = hardening.harden_checkpoint(cfg8, ckpt, "train/checkpoint.pt", progress=False)
    ch = result.report["channels"]
    sizes = {g.name: g.size for g in groups if g.prunable}
    for g in ch["groups"]:
        assert g["kept_nonzero"] == len(keep[g["name"]])
        assert g["kept"] == min(sizes[g["name"]], -(-g["kept_nonzero"] // 8) * 8), g
    assert any(g["kept"] > g["kept_nonzero"] for g in ch["groups"])  # the plan above is not blocked already
    assert ch["channel_multiple"] == 8 and ch["compact_vs_zeroed_max_rel"] < 1e-5
    assert ch["mac_fraction_removed"] < ch["mac_fraction_removed_before_rounding"]
    # the unrounded harden of the same plan: the same MACs before rounding, the same val metrics
    restore(keep)
    plain = hardening.harden_checkpoint(cfg, ckpt, "train/checkpoint.pt", progress=False)
    assert plain.report["channels"]["mac_fraction_removed"] == pytest.approx(ch["mac_fraction_removed_before_rounding"])
    for task, values in plain.metrics.items():
        assert result.metrics[task] == pytest.approx(values, rel=1e-4, abs=1e-6), task
