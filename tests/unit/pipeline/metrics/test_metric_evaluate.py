"""evaluate() over a loader and metrics_from_outputs() on saved runtime outputs agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.metrics import (
    DepthMetric,
    NormalMetric,
    SegMetric,
    evaluate,
    make_metrics,
    metrics_from_outputs,
)
from pipeline.models import create_model

TASKS = {"seg": 5, "depth": 1, "normal": 3}


def _loader(batches: int = 2, n: int = 3) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        {
            "image": torch.rand(n, 3, 32, 32, generator=g),
            "seg": torch.randint(-1, 5, (n, 32, 32), generator=g),
            "depth": torch.rand(n, 1, 32, 32, generator=g) * 4,
            "normal": torch.nn.functional.normalize(torch.randn(n, 3, 32, 32, generator=g), dim=1),
        }
        for _ in range(batches)
    ]


def test_make_metrics() -> None:
    metrics = make_metrics(["depth", "seg"], 5)
    assert list(metrics) == ["depth", "seg"]
    assert isinstance(metrics["depth"], DepthMetric) and isinstance(metrics["seg"], SegMetric)
    assert isinstance(make_metrics(["normal"], 5)["normal"], NormalMetric)
    with pytest.raises(ValueError, match="no metric for task 'edges'"):
        make_metrics(["edges"], 5)


@pytest.mark.parametrize("training", [True, False])
def test_evaluate_restores_mode_and_matches_saved_outputs(training: bool) -> None:
    torch.manual_seed(0)
    model = create_model("tiny_mtl", TASKS)
    model.train(training)
    loader = _loader()
    result = evaluate(model, loader, list(TASKS), num_classes=5)
    assert model.training is training
    assert list(result) == list(TASKS)
    assert set(result["normal"]) == {"mean", "median", "within_11_25", "within_22_5", "within_30"}

    # The deploy path: whole-split outputs as numpy (FP16 like a TensorRT engine may emit), targets as numpy.
    model.eval()
    with torch.no_grad():
        outs = [model(b["image"]) for b in loader]
    outputs = {t: torch.cat([o[t] for o in outs]).numpy() for t in TASKS}
    targets = {t: torch.cat([b[t] for b in loader]).numpy() for t in TASKS}
    again = metrics_from_outputs(outputs, targets, list(TASKS), num_classes=5, chunk=2)
    for task in TASKS:
        assert again[task] == pytest.approx(result[task], rel=1e-9, abs=1e-9)
    half = metrics_from_outputs({t: v.astype(np.float16) for t, v in outputs.items()}, targets, list(TASKS), 5)
    assert half["depth"]["abs_err"] == pytest.approx(result["depth"]["abs_err"], rel=1e-2)


def test_evaluate_restores_mode_on_error() -> None:
    model = create_model("tiny_mtl", TASKS).train()
    with pytest.raises(KeyError):
        evaluate(model, [{"image": torch.rand(1, 3, 32, 32)}], ["seg"], 5)
    assert model.training


def test_metrics_from_outputs_checks_inputs() -> None:
    with pytest.raises(ValueError, match="missing from the targets"):
        metrics_from_outputs({"depth": np.ones((1, 1, 2, 2))}, {}, ["depth"], 5)
    with pytest.raises(ValueError, match="2 outputs but 1 targets"):
        metrics_from_outputs({"depth": np.ones((2, 1, 2, 2))}, {"depth": np.ones((1, 1, 2, 2))}, ["depth"], 5)
