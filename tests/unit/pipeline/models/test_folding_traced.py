"""BN folding finds conv->BN pairs outside nn.Sequential (attribute pairs in a user's forward) from a torch.fx
trace, and leaves a conv whose output also goes elsewhere unfolded."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.models.folding import batchnorm_pairs, fold_batchnorm_


class UserNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.branch = nn.Conv2d(8, 8, 3, padding=1, bias=False)  # output feeds bn2 AND the skip sum
        self.bn2 = nn.BatchNorm2d(8)
        self.head = nn.Sequential(nn.Conv2d(8, 4, 1, bias=False), nn.BatchNorm2d(4))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = torch.relu(self.bn(self.conv(x)))
        b = self.branch(y)
        y = self.bn2(b) + b
        return {"out": self.head(y)}


def _randomised(model: nn.Module) -> nn.Module:
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial statistics, so a wrong fold would show
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=gen))
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen))
    return model.eval()


def test_attribute_pairs_are_folded_and_a_shared_conv_output_is_not():
    model = _randomised(UserNet())
    x = torch.rand(2, 3, 12, 10)
    before = model(x)["out"]
    pairs, reason = batchnorm_pairs(model)
    assert reason is None and pairs == {"conv": "bn", "head.0": "head.1"}
    assert fold_batchnorm_(model) == ["conv", "head.0"]
    assert isinstance(model.bn, nn.Identity) and isinstance(model.bn2, nn.BatchNorm2d)
    assert model.branch.bias is None
    assert torch.allclose(model(x)["out"], before, atol=1e-5)
    # the structure a checkpoint lists is rebuilt on a fresh model: same state_dict keys
    fresh = UserNet().eval()
    fold_batchnorm_(fresh, only=["conv"])
    assert isinstance(fresh.bn, nn.Identity) and isinstance(fresh.head[1], nn.BatchNorm2d)


class Untraceable(UserNet):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            x = x * 1.0
        return super().forward(x)


def test_untraceable_model_keeps_the_sequential_pairs_and_says_why():
    model = _randomised(Untraceable())
    x = torch.rand(1, 3, 8, 8)
    before = model(x)["out"]
    pairs, reason = batchnorm_pairs(model)
    assert pairs == {"head.0": "head.1"} and "torch.fx could not trace Untraceable.forward" in reason
    assert fold_batchnorm_(model) == ["head.0"]
    assert torch.allclose(model(x)["out"], before, atol=1e-5)
