"""A small multitask net shaped like the real ones, sparse weight sets, and cached exports.

The net is local on purpose: the registered models are developed in parallel, and the exporters must accept
any module whose forward returns a dict of tensors keyed by task.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

TASKS = ("seg", "depth", "normal")
NUM_CLASSES = 5


def _block(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class TinyMTLNet(nn.Module):
    """image [B,3,H,W] -> {"seg": logits [B,C,H,W], "depth": positive [B,1,H,W], "normal": unit [B,3,H,W]}."""

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.backbone = nn.Sequential(*_block(3, 16), *_block(16, 32, stride=2))
        outs = {"seg": num_classes, "depth": 1, "normal": 3}
        self.heads = nn.ModuleDict(
            {t: nn.Sequential(*_block(32, 16), nn.Conv2d(16, c, 1)) for t, c in outs.items()}
        )

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.backbone(image)
        size = image.shape[-2:]
        up = {
            t: F.interpolate(h(feats), size=size, mode="bilinear", align_corners=False)
            for t, h in self.heads.items()
        }
        return {
            "seg": up["seg"],
            "depth": F.softplus(up["depth"]) + 1e-3,
            "normal": F.normalize(up["normal"], dim=1),
        }


def sparsify_(net: nn.Module, pattern: str, seed: int = 0) -> nn.Module:
    """Zero conv weights in place: "unstructured" (90 % smallest by |w|) or "2:4" (along in-channels, where
    in-channels % 4 == 0). BatchNorm statistics are randomised so BN folding really rescales the weights."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.uniform_(-0.1, 0.1, generator=gen)
            if not isinstance(m, nn.Conv2d) or pattern == "dense":
                continue
            w = m.weight
            if pattern == "unstructured":
                k = int(0.9 * w.numel())
                thresh = w.abs().flatten().kthvalue(k).values
                w.mul_((w.abs() > thresh).float())
            elif pattern == "2:4" and w.shape[1] % 4 == 0:
                groups = w.permute(0, 2, 3, 1).reshape(-1, 4)
                keep = groups.abs().topk(2, dim=1).indices
                mask = torch.zeros_like(groups).scatter_(1, keep, 1.0)
                w.copy_(
                    (groups * mask)
                    .reshape(w.shape[0], w.shape[2], w.shape[3], w.shape[1])
                    .permute(0, 3, 1, 2)
                )
    return net


@pytest.fixture(scope="session")
def make_net() -> Callable[..., TinyMTLNet]:
    """Factory: make_net(pattern="dense"|"unstructured"|"2:4", seed=0) -> eval-mode TinyMTLNet."""

    def make(pattern: str = "dense", seed: int = 0) -> TinyMTLNet:
        torch.manual_seed(seed)
        return sparsify_(TinyMTLNet(), pattern, seed).eval()

    return make


@pytest.fixture(scope="session")
def example_image() -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32))


@pytest.fixture(scope="session")
def exported(
    tmp_path_factory, make_net, example_image
) -> Callable[[str, str], tuple[Path, nn.Module, object]]:
    """Factory with a cache: exported(exporter, pattern) -> (onnx path, torch model, ExportInfo).

    Dynamo exports take ~3 s each, so every (exporter, pattern) is exported once per session.
    """
    from exporters.onnx_export import export_onnx

    cache: dict[tuple[str, str], tuple[Path, nn.Module, object]] = {}
    root = tmp_path_factory.mktemp("exports")

    def get(exporter: str, pattern: str) -> tuple[Path, nn.Module, object]:
        if (exporter, pattern) not in cache:
            net = make_net(pattern)
            path = root / f"{exporter}_{pattern.replace(':', '-')}.onnx"
            info = export_onnx(
                net,
                path,
                task_names=TASKS,
                example_input=example_image,
                exporter=exporter,
                metadata={
                    "class_names": [f"c{i}" for i in range(NUM_CLASSES)],
                    "source_run": "runs/test",
                    "sparsity": {"pattern": pattern},
                },
            )
            cache[exporter, pattern] = (path, net, info)
        return cache[exporter, pattern]

    return get
