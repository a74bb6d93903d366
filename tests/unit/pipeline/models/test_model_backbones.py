"""Backbones: torchvision-compatible names and shapes, exact parameter counts, dilation, weight loading."""

from __future__ import annotations

import functools
import sys
import types

import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.models.backbones import (
    CompactBackbone,
    MobileNetV2Backbone,
    load_torchvision_weights,
    resnet18_dilated,
    resnet34_dilated,
)


@functools.cache
def built(factory):  # read-only uses share one instance: building ResNet-34 costs ~0.3 s
    return factory()


def conv_weights(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.dim() == 4)


def all_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_resnet34_conv_weights_match_method_md() -> None:
    """method.md section 7: DeepLab-ResNet34 backbone = 21,267,648 counted conv weights."""
    assert conv_weights(built(resnet34_dilated)) == 21_267_648


def test_mobilenetv2_conv_weights_match_method_md() -> None:
    assert conv_weights(built(MobileNetV2Backbone)) == 2_189_760


@pytest.mark.parametrize(
    ("factory", "torchvision_total", "classifier"),
    [
        # torchvision's published totals minus the ImageNet classifier (fc / classifier.1).
        (resnet18_dilated, 11_689_512, 512 * 1000 + 1000),
        (resnet34_dilated, 21_797_672, 512 * 1000 + 1000),
        (MobileNetV2Backbone, 3_504_872, 1280 * 1000 + 1000),
    ],
)
def test_parameter_totals_equal_torchvision(factory, torchvision_total: int, classifier: int) -> None:
    assert all_params(built(factory)) == torchvision_total - classifier


def test_resnet_names_follow_torchvision() -> None:
    sd = {f"backbone.{k}": v for k, v in built(resnet34_dilated).state_dict().items()}
    expected = {
        "backbone.conv1.weight": (64, 3, 7, 7),
        "backbone.bn1.running_var": (64,),
        "backbone.layer1.2.conv2.weight": (64, 64, 3, 3),
        "backbone.layer2.0.downsample.0.weight": (128, 64, 1, 1),
        "backbone.layer3.5.bn2.weight": (256,),
        "backbone.layer4.0.downsample.0.weight": (512, 256, 1, 1),
        "backbone.layer4.0.downsample.1.running_mean": (512,),
        "backbone.layer4.2.conv2.weight": (512, 512, 3, 3),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    assert "backbone.layer1.0.downsample.0.weight" not in sd  # layer1 keeps 64 channels at stride 1
    assert "backbone.layer4.3.conv1.weight" not in sd
    assert "backbone.bn1.num_batches_tracked" in sd


def test_mobilenetv2_names_follow_torchvision() -> None:
    sd = built(MobileNetV2Backbone).state_dict()
    expected = {
        "features.0.0.weight": (32, 3, 3, 3),
        "features.0.1.weight": (32,),
        "features.1.conv.0.0.weight": (32, 1, 3, 3),  # t = 1: depthwise, then project
        "features.1.conv.1.weight": (16, 32, 1, 1),
        "features.1.conv.2.running_mean": (16,),
        "features.2.conv.0.0.weight": (96, 16, 1, 1),  # t = 6: expand, depthwise, project, BN
        "features.2.conv.1.0.weight": (96, 1, 3, 3),
        "features.2.conv.2.weight": (24, 96, 1, 1),
        "features.2.conv.3.weight": (24,),
        "features.17.conv.2.weight": (320, 960, 1, 1),
        "features.18.0.weight": (1280, 320, 1, 1),
        "features.18.1.running_var": (1280,),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    assert "features.19.0.weight" not in sd


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_mobilenetv2_output_stride(output_stride: int) -> None:
    backbone = MobileNetV2Backbone(output_stride).eval()
    with torch.no_grad():
        y = backbone(torch.rand(1, 3, 64, 64))
    assert y.shape == (1, 1280, 64 // output_stride, 64 // output_stride)


def test_dilated_resnet_is_stride_8_and_dilates_last_stages() -> None:
    backbone = resnet18_dilated().eval()
    assert backbone.output_stride == 8
    assert backbone.layer3[0].conv1.dilation == (2, 2) and backbone.layer3[0].conv1.stride == (1, 1)
    assert backbone.layer4[1].conv2.dilation == (4, 4)
    with torch.no_grad():
        assert backbone(torch.rand(1, 3, 64, 80)).shape == (1, 512, 8, 10)


def test_compact_backbone_shape() -> None:
    backbone = CompactBackbone().eval()
    with torch.no_grad():
        assert backbone(torch.rand(2, 3, 64, 80)).shape == (2, 64, 8, 10)
    assert backbone.layer4[0].conv1.dilation == (2, 2)


def test_load_torchvision_weights_without_torchvision(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchvision", None)  # makes `import torchvision` raise ImportError
    with pytest.raises(PipelineError, match="needs torchvision"):
        load_torchvision_weights(resnet18_dilated(), "resnet18")


def test_load_torchvision_weights_with_a_stand_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake torchvision whose checkpoint is a randomised backbone plus an ImageNet fc."""
    torch.manual_seed(0)
    source = resnet18_dilated()
    state = {k: torch.randn_like(v.float()).to(v.dtype) for k, v in source.state_dict().items()}
    state |= {"fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}

    class FakeNet:
        def state_dict(self) -> dict[str, torch.Tensor]:
            return state

    calls = []
    models = types.SimpleNamespace(get_model=lambda arch, weights: calls.append((arch, weights)) or FakeNet())
    monkeypatch.setitem(sys.modules, "torchvision", types.SimpleNamespace(models=models))
    target = resnet18_dilated()
    load_torchvision_weights(target, "resnet18")
    assert calls == [("resnet18", "DEFAULT")]
    for key, value in target.state_dict().items():
        assert torch.equal(value, state[key]), key
    with pytest.raises(PipelineError, match="do not fit"):
        load_torchvision_weights(resnet34_dilated(), "resnet18")
    with pytest.raises(PipelineError, match="no torchvision weights"):
        load_torchvision_weights(target, "compact")
