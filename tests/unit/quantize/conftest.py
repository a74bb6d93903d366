"""A 2:4-sparse tiny_mtl exported to ONNX once per session, calibration images and ground truth.

The ground truth is the fp32 model's own prediction on the evaluation images, so fp32 scores perfectly and
every metric change in the gate is int8's doing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.models import create_model
from tests.unit.exporters.conftest import sparsify_

TASKS = ("seg", "depth", "normal")
NUM_CLASSES = 5
HW = (32, 32)


@dataclass(frozen=True)
class Setup:
    fp32: Path
    calib: np.ndarray  # [16, 3, H, W]
    images: np.ndarray  # [8, 3, H, W], disjoint from calib
    targets: dict[str, np.ndarray]


def _smooth_images(rng: np.random.Generator, n: int) -> np.ndarray:
    # Low-frequency images (coarse noise, upsampled) look more like scenes than white noise does.
    coarse = torch.from_numpy(rng.random((n, 3, HW[0] // 8, HW[1] // 8), dtype=np.float32))
    return torch.nn.functional.interpolate(coarse, size=HW, mode="bilinear").numpy()


@pytest.fixture(scope="session")
def setup(tmp_path_factory) -> Setup:
    from exporters.onnx_export import export_onnx

    torch.manual_seed(0)
    net = create_model("tiny_mtl", {"seg": NUM_CLASSES, "depth": 1, "normal": 3})
    sparsify_(net, "2:4").eval()
    with torch.no_grad():  # untrained heads are bias-dominated: the seg argmax would ignore the image
        for name, p in net.named_parameters():
            if "classifier" in name and name.endswith("bias"):
                p.zero_()
    rng = np.random.default_rng(0)
    calib, images = _smooth_images(rng, 16), _smooth_images(rng, 8)
    path = tmp_path_factory.mktemp("quantize") / "fp32.onnx"
    export_onnx(net, path, task_names=TASKS, example_input=torch.from_numpy(calib[:2]))
    with torch.no_grad():
        out = net(torch.from_numpy(images))
    targets = {
        "seg": out["seg"].argmax(1).numpy(),
        "depth": out["depth"].numpy(),
        "normal": out["normal"].numpy(),
    }
    return Setup(path, calib, images, targets)
