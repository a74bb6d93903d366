"""Channel groups, MAC costs and compaction (pipeline.models.channels) on every registered model and user models.

The exactness contract: a model whose removed channels are zeroed (`zero_channels_`) and the physically compacted
model (`compact_`) compute the same outputs up to fp32 rounding.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from examples.custom_model.model import build_model
from pipeline.errors import ConfigError
from pipeline.models import create_model
from pipeline.models.channels import (
    ChannelGroup,
    channel_groups,
    compact_,
    conv_macs,
    kept_from_mask,
    model_macs,
    planned_macs,
    zero_channels_,
)
from pipeline.models.registry import list_models

TASKS = {"seg": 5, "depth": 1, "normal": 3}
HEAD = {"head_width": 16, "dilations": [1, 2]}
SMALL = {
    "tiny_mtl": {},
    "scene_aspp": {"widths": [8, 16, 16, 24], **HEAD},
    "deeplab_resnet18": HEAD,
    "deeplab_resnet34": HEAD,
    "mobilenetv2_aspp": {"width_mult": 0.25, **HEAD},
}


def _randomise_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine terms, so a wrongly kept or dropped channel changes the outputs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.2)
            elif isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.copy_(torch.randn(m.out_channels, generator=gen) * 0.1)
    return model.eval()


def _prunable_convs(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and "classifier" not in n]


def _random_keep(groups: list[ChannelGroup], seed: int = 0) -> dict[str, torch.Tensor]:
    """About half the channels of every prunable group (at least one kept, at least one removed)."""
    gen = torch.Generator().manual_seed(seed)
    keep = {}
    for g in groups:
        if g.prunable and g.size > 1:
            mask = torch.rand(g.size, generator=gen) < 0.5
            mask[0], mask[-1] = True, False
            keep[g.name] = kept_from_mask(mask)
    return keep


def _assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-5 * float(a[k].abs().max()) + 1e-7, msg=k)


def _check_exact(model: nn.Module, x: torch.Tensor, prunable: list[str]) -> tuple[nn.Module, dict]:
    groups = channel_groups(model, x, prunable)
    keep = _random_keep(groups)
    assert keep, "no prunable group: the test would check nothing"
    zeroed = zero_channels_(copy.deepcopy(model), groups, keep)
    compacted = compact_(copy.deepcopy(zeroed), x, keep)
    with torch.no_grad():
        y_zero, y_compact, y_dense = zeroed(x), compacted(x), model(x)
    _assert_close(y_zero, y_compact)
    assert any((y_dense[k] - y_zero[k]).abs().max() > 1e-3 for k in y_dense), "zeroing changed nothing"
    modules = dict(compacted.named_modules())
    for g in groups:
        for conv in g.convs:
            expected = len(keep[g.name]) if g.name in keep else g.size
            assert modules[conv].out_channels == expected, conv
            assert modules[conv].weight.shape[0] == expected, conv
    # the MAC budget's bilinear form predicts the compacted model's cost exactly, before compacting
    counts = {name: len(k) for name, k in keep.items()}
    assert planned_macs(model, groups, conv_macs(model, x), counts) == model_macs(compacted, x)
    return compacted, keep


@pytest.mark.parametrize("name", list_models())
def test_compaction_equals_the_zeroed_model_on_every_registered_model(name: str) -> None:
    model = _randomise_(create_model(name, TASKS, **SMALL[name]))
    x = torch.rand(2, 3, 32, 32)
    compacted, keep = _check_exact(model, x, _prunable_convs(model))
    assert model_macs(compacted, x) < model_macs(model, x)
    assert sum(p.numel() for p in compacted.parameters()) < sum(p.numel() for p in model.parameters())


def test_residual_convs_land_in_one_group_and_are_pruned_together() -> None:
    model = _randomise_(create_model("tiny_mtl", TASKS))
    x = torch.rand(1, 3, 32, 32)
    groups = {g.name: g for g in channel_groups(model, x, _prunable_convs(model))}
    # layer3.0 downsamples (conv2 + downsample.0 add), layer4.0 keeps the width: its conv2 adds onto the same map
    g = groups["backbone.layer3.0.conv2"]
    assert set(g.convs) == {"backbone.layer3.0.conv2", "backbone.layer3.0.downsample.0", "backbone.layer4.0.conv2"}
    assert {"backbone.layer3.0.bn2", "backbone.layer3.0.downsample.1", "backbone.layer4.0.bn2"} <= set(g.norms)
    assert "backbone.layer4.0.conv2" not in groups  # only the root names a group
    # the stem feeds layer1's identity shortcut
    assert groups["backbone.conv1"].convs == ("backbone.conv1", "backbone.layer1.0.conv2")
    compact_(model, x, {g.name: [0, 5, 7]})
    mods = dict(model.named_modules())
    assert [mods[c].out_channels for c in g.convs] == [3, 3, 3]
    # consumers: layer4.0.conv1 and every head's first conv read the 3 kept channels
    assert mods["backbone.layer4.0.conv1"].in_channels == 3
    assert mods["heads.depth.branches.1.conv1"].in_channels == 3
    assert model(x)["seg"].shape == (1, 5, 32, 32)


def test_summed_aspp_classifiers_are_one_group_that_is_never_pruned() -> None:
    model = create_model("tiny_mtl", TASKS)
    groups = {g.name: g for g in channel_groups(model, torch.rand(1, 3, 32, 32), _prunable_convs(model) + [
        "heads.seg.branches.0.classifier", "heads.seg.branches.1.classifier"])}
    g = groups["heads.seg.branches.0.classifier"]
    assert g.convs == ("heads.seg.branches.0.classifier", "heads.seg.branches.1.classifier")
    assert not g.prunable and g.reason == "produces model output 'seg'"
    with pytest.raises(ConfigError, match="heads.seg.branches.0.classifier.*produces model output 'seg'"):
        compact_(model, torch.rand(1, 3, 32, 32), {g.name: [0]})


def test_depthwise_convs_follow_their_expansion_conv() -> None:
    model = create_model("mobilenetv2_aspp", TASKS, **SMALL["mobilenetv2_aspp"])
    groups = {g.name: g for g in channel_groups(model, torch.rand(1, 3, 32, 32), _prunable_convs(model))}
    g = groups["backbone.features.2.conv.0.0"]
    assert g.convs == ("backbone.features.2.conv.0.0", "backbone.features.2.conv.1.0")  # expand 1x1 + depthwise
    assert g.consumers == ("backbone.features.2.conv.2",)
    assert g.prunable


def test_a_group_touching_a_dense_layer_is_not_prunable() -> None:
    model = create_model("tiny_mtl", TASKS)
    prunable = [n for n in _prunable_convs(model) if n != "backbone.layer1.0.conv2"]
    groups = {g.name: g for g in channel_groups(model, torch.rand(1, 3, 32, 32), prunable)}
    assert not groups["backbone.conv1"].prunable
    assert groups["backbone.conv1"].reason == "coupled with dense layer 'backbone.layer1.0.conv2'"
    assert groups["backbone.layer1.0.conv1"].prunable


@pytest.mark.parametrize("name", ["tiny_mtl", "mobilenetv2_aspp"])
def test_macs_per_channel_is_what_removing_one_channel_saves(name: str) -> None:
    model = create_model(name, TASKS, **SMALL[name]).eval()
    x = torch.rand(1, 3, 32, 32)
    dense = model_macs(model, x)
    assert dense == sum(conv_macs(model, x).values())
    stem = conv_macs(model, x)[next(n for n, m in model.named_modules() if isinstance(m, nn.Conv2d))]
    assert stem == 16 * 16 * 3 * 9 * next(m for m in model.modules() if isinstance(m, nn.Conv2d)).out_channels
    groups = [g for g in channel_groups(model, x, _prunable_convs(model)) if g.prunable]
    for g in groups[:: max(1, len(groups) // 6)]:
        smaller = compact_(copy.deepcopy(model), x, {g.name: list(range(1, g.size))})
        assert dense - model_macs(smaller, x) == g.macs_per_channel, g.name


def test_a_keep_of_zero_channels_is_a_one_line_config_error() -> None:
    model = create_model("tiny_mtl", TASKS)
    x = torch.rand(1, 3, 32, 32)
    groups = channel_groups(model, x, _prunable_convs(model))
    with pytest.raises(ConfigError, match="remove every channel of layer 'backbone.layer2.0.conv1'") as e:
        compact_(model, x, {"backbone.layer2.0.conv1": torch.zeros(0, dtype=torch.int64)})
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="remove every channel of layer 'backbone.layer2.0.conv1'"):
        zero_channels_(model, groups, {"backbone.layer2.0.conv1": []})
    with pytest.raises(ConfigError, match="'backbone.layer2.0.conv9', which is not a channel group"):
        compact_(model, x, {"backbone.layer2.0.conv9": [0]})


def test_the_training_mode_survives_tracing() -> None:
    model = create_model("tiny_mtl", TASKS).train()
    channel_groups(model, torch.rand(1, 3, 32, 32), _prunable_convs(model))
    assert all(m.training for m in model.modules())


# -- user models --------------------------------------------------------------------------------------------------


def test_the_custom_example_model_compacts_exactly() -> None:
    model = _randomise_(build_model({"seg": 5, "depth": 1, "normal": 3}, width=8))
    prunable = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and not n.endswith(".1")]
    compacted, _ = _check_exact(model, torch.rand(2, 3, 32, 32), prunable)
    assert compacted.bridge[0].out_channels < 16


class _ConcatNet(nn.Module):
    """ASPP-style concatenated branches, a grouped conv and a linear consumer."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.a = nn.Sequential(nn.Conv2d(8, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(8, 4, 3, padding=2, dilation=2), nn.BatchNorm2d(4), nn.ReLU())
        self.fuse = nn.Sequential(nn.Conv2d(10, 8, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.seg = nn.Conv2d(8, 3, 1)
        self.pre_fc = nn.Conv2d(8, 4, 1)
        self.fc = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        s = self.stem(x)
        f = self.fuse(torch.cat([self.a(s), self.b(s)], dim=1))
        depth = self.fc(self.pre_fc(f).mean((2, 3)))[:, :, None, None].expand(-1, 1, *x.shape[-2:])
        return {"seg": self.seg(self.grouped(f)), "depth": torch.exp(depth)}


def test_concatenated_branches_compact_exactly_and_grouped_or_linear_coupling_is_refused() -> None:
    model = _randomise_(_ConcatNet())
    x = torch.rand(2, 3, 16, 16)
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    groups = {g.name: g for g in channel_groups(model, x, convs)}
    assert groups["a.0"].prunable and groups["b.0"].prunable and groups["stem.0"].prunable
    assert groups["fuse.0"].reason == "coupled with grouped conv 'grouped' (groups=2)"
    assert not groups["grouped"].prunable
    assert groups["seg"].reason == "produces model output 'seg'"  # a conv returned as is
    assert "coupled with dense layer 'fc'" in groups["pre_fc"].reason
    compacted, keep = _check_exact(model, x, convs)
    assert compacted.fuse[0].in_channels == len(keep["a.0"]) + len(keep["b.0"])


class _ShuffleNet(nn.Module):
    """A channel shuffle (view + transpose): tp cannot map the conv's channels through it."""

    def __init__(self) -> None:
        super().__init__()
        self.mix = nn.Conv2d(3, 8, 3, padding=1)
        self.out = nn.Conv2d(8, 1, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = F.relu(self.mix(x))
        b, c, h, w = y.shape
        y = y.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)
        return {"depth": torch.exp(self.out(y))}


def test_a_coupling_that_cannot_be_resolved_names_the_layer() -> None:
    model = _ShuffleNet()
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(ConfigError, match="cannot resolve the coupling of layer 'mix'") as e:
        channel_groups(model, x, ["mix"])
    assert "\n" not in str(e.value)
    groups = channel_groups(model, x, [])  # left dense by rule: nothing to resolve
    assert [g.prunable for g in groups] == [False, False]
