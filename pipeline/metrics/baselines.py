"""A constant predictor: the floor any trained model must clear on a dataset.

seg: the most frequent training class everywhere; depth: the median training depth; normal: the mean training
normal (normalised). Computed with the same metric code as the models.
"""

from __future__ import annotations

import torch

from pipeline.metrics.evaluate import make_metrics


@torch.no_grad()
def constant_predictor_metrics(train_set, val_set, tasks: list[str]) -> dict[str, dict[str, float]]:
    train = train_set[torch.arange(len(train_set))]
    val = val_set[torch.arange(len(val_set))]
    n, _, h, w = val["image"].shape
    outputs = {}
    if "seg" in tasks:
        labels = train["seg"][train["seg"] >= 0]
        majority = int(torch.bincount(labels, minlength=train_set.num_classes).argmax())
        logits = torch.zeros(n, train_set.num_classes, h, w)
        logits[:, majority] = 1.0
        outputs["seg"] = logits
    if "depth" in tasks:
        d = train["depth"][train["depth"] > 0]
        outputs["depth"] = torch.full((n, 1, h, w), float(d.median()))
    if "normal" in tasks:
        nrm = train["normal"]
        valid = nrm.abs().sum(1) > 0
        mean = nrm.permute(0, 2, 3, 1)[valid].mean(0)
        mean = mean / mean.norm()
        outputs["normal"] = mean.view(1, 3, 1, 1).expand(n, 3, h, w).clone()
    metrics = make_metrics(tasks, train_set.num_classes)
    for t in tasks:
        metrics[t].update(outputs[t], val[t])
    return {t: metrics[t].compute() for t in tasks}
