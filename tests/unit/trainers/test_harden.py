"""2:4 projection on the input-channel axis, eligibility rules, BN folding, adaptive-2:4 decisions."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.errors import PipelineError
from pipeline.models.folding import fold_batchnorm_
from pipeline.nm_sparsity import nm_violations as _nm_violations
from trainers.sparsity.harden import nm_eligibility, nm_mask, nm_project_


def nm_violations(w: torch.Tensor) -> int:
    return _nm_violations(w.detach().numpy())


def test_nm_mask_keeps_two_largest_of_each_group_of_four_input_channels():
    w = torch.tensor([0.1, -0.9, 0.3, 0.05, 2.0, 0.0, -0.01, 1.0]).view(1, 8, 1, 1)
    keep = nm_mask(w).view(-1).tolist()
    assert keep == [False, True, True, False, True, False, False, True]
    # groups run along dim 1 (input channels), not along the kernel: same answer for every (k, r, s)
    w2 = torch.randn(6, 16, 3, 3)
    pruned = w2 * nm_mask(w2)
    assert nm_violations(pruned) == 0 and nm_violations(w2) > 0
    assert int((pruned != 0).sum()) == w2.numel() // 2
    assert _nm_violations(pruned.numpy(), n=1) == pruned.numel() // 4  # every group holds exactly 2 nonzeros


def test_eligibility_rules():
    assert nm_eligibility(nn.Conv2d(3, 16, 3)) == (False, "3 input channels, not a multiple of 16")
    assert not nm_eligibility(nn.Conv2d(32, 32, 3, groups=32))[0]
    assert not nm_eligibility(nn.Conv2d(32, 12, 1))[0]
    assert nm_eligibility(nn.Conv2d(32, 64, 3))[0]


def test_adaptive_two_four_only_touches_high_sparsity_layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(16, 16, 3), nn.Conv2d(16, 16, 3), nn.Conv2d(3, 16, 3))
    learned = {"0": 0.9, "1": 0.2, "2": 0.95}
    dense_before = model[1].weight.detach().clone()
    decisions, masks = nm_project_(model, ["0", "1", "2"], learned, "adaptive-2:4", adaptive_min_sparsity=0.5)
    by = {d.name: d for d in decisions}
    assert by["0"].pattern == "2:4" and nm_violations(model[0].weight) == 0
    assert by["1"].pattern == "unstructured" and "kept" in by["1"].reason
    assert torch.equal(model[1].weight, dense_before)
    assert by["2"].reason.startswith("skipped")
    assert set(masks) == {"0", "1", "2"}


def test_fold_batchnorm_keeps_outputs_and_zeros():
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 16, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.mul_(nm_mask(conv.weight))
    bn = nn.BatchNorm2d(16)
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2.0)
    model = nn.Sequential(conv, bn, nn.ReLU()).eval()
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        before = model(x)
        zeros = conv.weight == 0
        assert fold_batchnorm_(model) == ["0"]
        after = model(x)
    assert isinstance(model[1], nn.Identity)
    assert torch.allclose(before, after, atol=1e-5)
    assert torch.equal(conv.weight == 0, zeros) and nm_violations(conv.weight) == 0


def test_fold_batchnorm_only_rebuilds_the_listed_structure():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), nn.Conv2d(8, 8, 1, bias=False), nn.BatchNorm2d(8))
    assert fold_batchnorm_(model.eval(), only=["2"]) == ["2"]
    assert isinstance(model[1], nn.BatchNorm2d) and isinstance(model[3], nn.Identity)
    assert model[2].bias is not None
    with pytest.raises(PipelineError, match="'0'|0 is not a conv"):
        fold_batchnorm_(nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU()).eval(), only=["0"])
