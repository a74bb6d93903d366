"""The public API for one's own training loop: the README's snippet runs as written, on a model and data here.

The snippet is read out of README.md and executed, so the documented code can never rot.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import ConfigError
from trainers.assembly import assemble_trainer, build_model
from trainers.objectives import depth_loss, normal_loss, seg_loss
from trainers.sparsify import Sparsifier, sparsify
from trainers.sparsity.layers import SparseConv2d

README = Path(__file__).resolve().parents[3] / "README.md"
SECTION = "## Compress inside your own training loop"
CLASSES = 3


def readme_snippet() -> str:
    text = README.read_text(encoding="utf-8")
    assert SECTION in text, "README lost its API section"
    blocks = re.findall(r"```python\n(.*?)```", text.split(SECTION, 1)[1], flags=re.S)
    assert blocks, "the API section has no python block"
    return blocks[0]


def _head(out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(conv=nn.Conv2d(16, 16, 3, padding=1), relu=nn.ReLU(), classifier=nn.Conv2d(16, out_channels, 1))
    )


class UserNet(nn.Module):
    """A user's own multitask net (not from the model zoo): backbone + one head per task."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        )
        self.heads = nn.ModuleDict({"seg": _head(CLASSES), "depth": _head(1), "normal": _head(3)})

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.backbone(image)
        return {
            "seg": self.heads["seg"](f),
            "depth": F.softplus(self.heads["depth"](f)) + 0.1,
            "normal": F.normalize(self.heads["normal"](f), dim=1),
        }


def user_loader(batches: int = 12, size: int = 4, h: int = 16, w: int = 20) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(batches):
        normal = F.normalize(torch.randn(size, 3, h, w, generator=gen), dim=1)
        out.append({
            "image": torch.rand(size, 3, h, w, generator=gen),
            "seg": torch.randint(0, CLASSES, (size, h, w), generator=gen),
            "depth": 1 + 2 * torch.rand(size, 1, h, w, generator=gen),
            "normal": normal,
        })
    return out


def user_loss(task: str, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return {"seg": seg_loss, "depth": depth_loss, "normal": normal_loss}[task](pred, target)


def test_the_readme_snippet_runs_and_compresses(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the snippet writes model.onnx into the working directory
    torch.manual_seed(0)
    model, loader = UserNet(), user_loader()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    scope = {"model": model, "loader": loader, "loss_fn": user_loss, "num_classes": CLASSES}
    exec(compile(readme_snippet(), "README.md:api", "exec"), scope)

    sp, plain, check = scope["sp"], scope["plain"], scope["check"]
    assert isinstance(sp, Sparsifier) and plain is model
    assert not any(isinstance(m, SparseConv2d) for m in plain.modules())  # a plain nn.Module
    assert sp.sparsity()["overall"] == pytest.approx(0.9, abs=0.01)  # the exact target at the end
    prunable = [m.weight for n, m in plain.named_modules() if isinstance(m, nn.Conv2d) and "classifier" not in n]
    zeros = sum(int((w == 0).sum()) for w in prunable) / sum(w.numel() for w in prunable)
    assert zeros == pytest.approx(0.9, abs=0.01)  # stored zeros, not a mask
    assert all(float((plain.heads[t].classifier.weight == 0).float().mean()) == 0 for t in ("seg", "depth"))
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())  # it trained
    assert (tmp_path / "model.onnx").is_file() and check["passed"] and check["heads_passed"]
    assert sp.weighting.kind == "static"  # the default adapmtl uses static task weights since 0.3 (adapmtl_adaptive: adaptive)


def test_the_pipeline_trainer_steps_through_the_same_object(tiny_cfg, monkeypatch):
    """One implementation: Trainer.train_step runs the Sparsifier's hooks, in the documented order."""
    from pipeline.data import build_dataset

    calls: list[str] = []
    for hook in ("before_forward", "weighted_loss", "after_backward", "after_optimizer_step"):
        original = getattr(Sparsifier, hook)

        def spy(self, *args, _name=hook, _original=original):
            calls.append(_name)
            return _original(self, *args)

        monkeypatch.setattr(Sparsifier, hook, spy)
    data = build_dataset(tiny_cfg.data, "train", tiny_cfg.tasks)
    model = build_model(tiny_cfg, data.num_classes)
    trainer = assemble_trainer(tiny_cfg, model, data, steps=2)
    assert isinstance(trainer.hooks, Sparsifier) and trainer.hooks.method is trainer.method
    losses = trainer.train_step(0)
    assert calls == ["before_forward", "weighted_loss", "after_backward", "after_optimizer_step"]
    assert losses == trainer.hooks.losses and set(losses) == set(tiny_cfg.tasks)
    # the optimizer holds the method's thresholds: the same param groups the API hands users
    assert len(trainer.optimizer.param_groups) == len(trainer.hooks.param_groups())


def test_non_finite_loss_is_refused_before_the_optimizer_step():
    model = UserNet()
    sp = sparsify(model, total_steps=10, weighting="static")
    out = model(user_loader(1)[0]["image"])
    loss = sp.weighted_loss({"seg": out["seg"].mean() * float("nan"), "depth": out["depth"].mean(),
                             "normal": out["normal"].mean()})
    loss.backward()
    with pytest.raises(Exception, match="loss of task 'seg' is nan"):
        sp.after_backward(0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method": "disparse_static"}, "scores weights on data"),
        ({"weighting": "sometimes"}, "weighting 'sometimes'"),
        ({"not_an_option": 1}, "SparsityConfig"),
        ({"method": "nope"}, "unknown sparsity method"),
    ],
)
def test_bad_arguments_are_one_line_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        sparsify(UserNet(), total_steps=10, **kwargs)


def test_the_tasks_default_to_the_model_heads():
    sp = sparsify(UserNet(), total_steps=10, method="gmp_global")
    assert sp.weighting.tasks == ["seg", "depth", "normal"] and sp.weighting.kind == "static"
    assert np.isclose(sp.sparsity()["overall"], 0.0)
