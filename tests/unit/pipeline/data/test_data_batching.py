"""The one batching path: per-sample datasets, the in-memory fast path, and the streaming constant baseline."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset

from pipeline.data.base import MultiTaskTensorDataset
from pipeline.data.batching import gather, iter_batches, stack_samples
from pipeline.errors import DataError
from pipeline.metrics.baselines import constant_predictions, constant_predictor_metrics
from pipeline.metrics.evaluate import make_metrics

TASKS = ["seg", "depth", "normal"]
C, H, W = 5, 6, 7


def _tensors(n: int, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    depth = torch.rand(n, 1, H, W, generator=gen) * 8
    depth[:, :, 0, :2] = 0.0  # invalid
    normal = torch.randn(n, 3, H, W, generator=gen)
    normal = normal / normal.norm(dim=1, keepdim=True)
    normal[:, :, 1, :3] = 0.0  # invalid
    return {
        "image": torch.rand(n, 3, H, W, generator=gen),
        "seg": torch.randint(-1, C, (n, H, W), generator=gen),
        "depth": depth,
        "normal": normal,
    }


class PerSampleOnly(Dataset):
    """A plain user dataset: one sample per int index; any other index (a batch tensor) is an error."""

    num_classes = C
    class_names = [f"c{i}" for i in range(C)]

    def __init__(self, n: int, seed: int = 0) -> None:
        self.data = _tensors(n, seed)
        self.loaded = 0

    def __len__(self) -> int:
        return self.data["image"].shape[0]

    def __getitem__(self, index):
        if type(index) is not int:
            raise AssertionError(f"indexed with {type(index).__name__}, not a single int")
        self.loaded += 1
        return {k: v[index].clone() for k, v in self.data.items()}


def _in_memory(n: int, seed: int = 0) -> MultiTaskTensorDataset:
    t = _tensors(n, seed)
    return MultiTaskTensorDataset(name="t", class_names=[f"c{i}" for i in range(C)], tasks=TASKS, **t)


def _whole_split_reference(train, val) -> dict[str, dict[str, float]]:
    """The former whole-split computation, kept here as the reference the streaming version must match."""
    tr, va = train.data, val.data
    n = va["image"].shape[0]
    majority = int(torch.bincount(tr["seg"][tr["seg"] >= 0], minlength=C).argmax())
    seg = torch.zeros(n, C, H, W)
    seg[:, majority] = 1.0
    depth = torch.full((n, 1, H, W), float(tr["depth"][tr["depth"] > 0].median()))
    nrm = tr["normal"].permute(0, 2, 3, 1)[tr["normal"].abs().sum(1) > 0].double().mean(0).float()
    normal = (nrm / nrm.norm()).view(1, 3, 1, 1).expand(n, 3, H, W)
    metrics = make_metrics(TASKS, C)
    for t, out in zip(TASKS, (seg, depth, normal)):
        metrics[t].update(out, va[t])
    return {t: metrics[t].compute() for t in TASKS}


def test_gather_stacks_per_sample_dicts_with_int_indices_only() -> None:
    ds = PerSampleOnly(5)
    batch = gather(ds, torch.tensor([3, 0, 4]))
    assert batch["image"].shape == (3, 3, H, W) and batch["seg"].dtype == torch.int64
    assert torch.equal(batch["seg"][0], ds.data["seg"][3]) and torch.equal(
        batch["depth"][2], ds.data["depth"][4]
    )


def test_gather_uses_the_fast_path_and_matches_per_sample_stacking() -> None:
    ds = _in_memory(6)
    idx = torch.tensor([5, 1, 2])
    fast = gather(ds, idx)
    slow = stack_samples([ds[int(i)] for i in idx])
    assert set(fast) == set(slow)
    for k in fast:
        assert fast[k].dtype == slow[k].dtype and torch.equal(fast[k], slow[k])


def test_iter_batches_streams_in_order_with_limit_and_indices() -> None:
    ds = PerSampleOnly(7)
    sizes = [b["image"].shape[0] for b in iter_batches(ds, 3)]
    assert sizes == [3, 3, 1] and ds.loaded == 7
    limited = list(iter_batches(ds, 4, limit=5))
    assert [b["image"].shape[0] for b in limited] == [4, 1]
    picked = list(iter_batches(ds, 2, indices=[6, 2, 4]))
    assert torch.equal(picked[1]["seg"][0], ds.data["seg"][4])
    with pytest.raises(ValueError, match="batch_size"):
        next(iter_batches(ds, 0))


def test_stack_samples_reports_malformed_samples() -> None:
    with pytest.raises(DataError, match="dicts of tensors"):
        stack_samples([(torch.zeros(3, 2, 2), torch.zeros(2, 2))])
    with pytest.raises(DataError, match="lacks 'seg'"):
        stack_samples(
            [{"image": torch.zeros(3, 2, 2), "seg": torch.zeros(2, 2)}, {"image": torch.zeros(3, 2, 2)}]
        )
    with pytest.raises(DataError, match="'image' shape"):
        stack_samples([{"image": torch.zeros(3, 2, 2)}, {"image": torch.zeros(3, 2, 3)}])


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_constant_baseline_streams_a_per_sample_dataset_and_matches_the_whole_split(batch_size: int) -> None:
    train, val = PerSampleOnly(7, seed=1), PerSampleOnly(4, seed=2)
    got = constant_predictor_metrics(train, val, TASKS, batch_size=batch_size)
    want = _whole_split_reference(train, val)
    for t in TASKS:
        assert got[t].keys() == want[t].keys()
        for k in want[t]:
            assert got[t][k] == pytest.approx(want[t][k], rel=1e-12, abs=1e-12), (t, k)


def test_median_depth_is_exactly_torch_median() -> None:
    for n in (1, 2, 3, 10, 1001):
        gen = torch.Generator().manual_seed(n)
        depth = (torch.rand(n, generator=gen) * 10).view(n, 1, 1, 1)
        depth[::3] = 0.0
        ds = PerSampleOnly(1)
        ds.data = {"image": torch.zeros(n, 3, 1, 1), "depth": depth}
        got = constant_predictions(ds, ["depth"], batch_size=4)["depth"]
        valid = depth[depth > 0]
        assert torch.equal(got, valid.median()) if valid.numel() else torch.isnan(got)


def test_constant_baseline_rejects_labels_beyond_num_classes() -> None:
    ds = PerSampleOnly(2)
    ds.data["seg"][1, 0, 0] = C  # one class too many
    with pytest.raises(DataError, match="num_classes=5"):
        constant_predictions(ds, ["seg"])
