"""`pipeline train` under torchrun (2 CPU processes, gloo): ranks stay identical, resume works, and 2 x (B/2)
matches 1 x B within the tolerances stated in docs/reliability.md.

One torchrun launch runs this file as a script (`_worker`, below) on two ranks. Each rank runs three jobs through
the real CLI (`pipeline.cli.main`) and saves the trainer state it ended with, so the test can compare ranks:

- live:    20 steps of the tiny preset (BatchNorm in training mode, as in real use);
- frozen:  the same with BatchNorm layers held in eval mode, which removes the one legitimate difference
           between 2 x (B/2) and 1 x B (per-shard batch statistics), so the match must be exact up to rounding;
- resumed: the same as live plus the dense reference, crashed on both ranks right after the step-10 resume
           point of the pruned model, crashed again right after the reference's step-10 resume point, and
           finished by re-running the same command.

The 1 x B runs of live and frozen run in the test process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BASE = ["train", "--config", "tiny", "--no-progress", "--set", "train.steps=20", "--set", "train.checkpoint_every=10",
        "--set", "train.log_every=1"]
JOBS = {
    "live": [*BASE, "--set", "dense_reference=null"],
    "frozen": [*BASE, "--set", "dense_reference=null"],
    "resumed": [*BASE, "--set", "dense_reference=auto"],
}

# Tolerances of 2 x (B/2) vs 1 x B (tiny preset, B = 8 split 2 x 4, 20 steps). Relative differences unless noted;
# metrics are compared as |a - b| <= tol * max(|b|, 1) (several are percentages near 0 on this untrained model).
# They sit a few times above what was measured (docs/reliability.md); the live-BatchNorm ones also leave room for
# changes to the method, whose trajectory they follow.
FROZEN_REL = 1e-4  # per-step losses, task weights, thresholds, BatchNorm frozen (measured <= 8.2e-6)
FROZEN_PARAM_REL = 1e-2  # per-tensor ||w2 - w1|| / ||w1||, BatchNorm frozen (measured <= 1.3e-3)
FROZEN_METRIC_TOL = 1e-3  # final val metrics, BatchNorm frozen (measured 0)
LIVE_STEP0_REL = 2e-2  # step-0 losses: same weights, only the shard batch statistics differ (measured 5.5e-3)
LIVE_LOSS_REL = 0.3  # per-step losses once the trajectories drift (measured <= 0.10)
# Per-layer refined thresholds (adapmtl >= 0.2: 36 on tiny, each learned from one layer's gradient) follow the
# drifting live-BN trajectory more closely than a 4-number component split did (then <= 0.10 and <= 9.4e-3).
LIVE_THRESHOLD_REL = 0.5  # per-component thresholds (measured 0.24)
LIVE_METRIC_TOL = 2e-2  # final val metrics (measured <= 9.8e-3)
LIVE_COMPONENT_ABS = 0.1  # per-component sparsity, absolute (measured 0.056); overall is exact


class _Crash(Exception):
    """A simulated crash of every rank right after a resume point was written."""


def _skip_markdown_report(run, report):
    return run.root / "report.md"  # report.md's plots cost seconds per command and are not under test here


def _install_capture(patcher, out: Path, tag: str, crash_at: int | None = None) -> None:
    """Make `train_run` save each finished trainer's state to out/<tag>-<method>-rank<r>.pt; crash on the
    `crash_at`-th resume point when asked."""
    import trainers.assembly as assembly
    from trainers import distributed as dist
    from trainers.loop import Trainer

    calls = {"n": 0}

    class Capturing(Trainer):
        def run(self, checkpoint=None, progress=True):
            def resume_point(t):
                checkpoint(t)
                calls["n"] += 1
                if calls["n"] == crash_at:
                    raise _Crash

            super().run(resume_point if checkpoint else None, progress)
            state = {k: v for k, v in self.state_dict().items() if k != "rng"}
            torch.save(state | {"world": dist.world_size()}, out / f"{tag}-{self.method.name}-rank{dist.rank()}.pt")

    patcher.setattr(assembly, "Trainer", Capturing)


def _freeze_bn(patcher) -> None:
    patcher.setattr(torch.nn.BatchNorm2d, "train", lambda self, mode=True: torch.nn.Module.train(self, False))


def _worker(out: Path) -> None:
    """One torchrun rank: the three jobs of the module docstring through the real CLI."""
    from pipeline.cli import main
    from trainers import distributed as dist

    def train(job: str) -> None:
        main([*JOBS[job], "--run-dir", str(out / job)], standalone_mode=False)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("pipeline.report.markdown.write_markdown_report", _skip_markdown_report)
        _install_capture(mp, out, "live")
        train("live")
        with pytest.MonkeyPatch.context() as frozen:
            _freeze_bn(frozen)
            _install_capture(frozen, out, "frozen")
            train("frozen")
        for crash_at in (1, 1, None):  # pruned model's step 10, then the reference's step 10, then to the end
            _install_capture(mp, out, "resumed", crash_at)
            try:
                train("resumed")
            except _Crash:
                dist.barrier()
            else:
                assert crash_at is None, "the crash did not happen"


def _load(p: Path) -> dict:
    return torch.load(p, weights_only=True)


def _same(a, b, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def _series_rel(two: list[dict], one: list[dict], key: str, steps=None) -> float:
    worst = 0.0
    for p2, p1 in zip(two, one, strict=True):
        assert p2["step"] == p1["step"]
        if steps is None or p1["step"] in steps:
            worst = max([worst] + [_rel(p2[key][t], p1[key][t]) for t in p1[key]])
    return worst


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    """Launch the 2-rank torchrun job once; returns (output folder, torchrun's output)."""
    out = tmp_path_factory.mktemp("ddp")
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TQDM_DISABLE="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", __file__, str(out)]
    proc = subprocess.run(cmd, cwd=out, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return out, proc.stdout


@pytest.fixture(scope="module")
def single(ddp):
    """The 1 x B runs of `live` and `frozen`, in this process."""
    out = ddp[0] / "single"
    out.mkdir()
    from click.testing import CliRunner

    from pipeline.cli import main

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ddp[0])  # same scene cache as the workers
        mp.setattr("pipeline.report.markdown.write_markdown_report", _skip_markdown_report)
        for job in ("live", "frozen"):
            with pytest.MonkeyPatch.context() as inner:
                if job == "frozen":
                    _freeze_bn(inner)
                _install_capture(inner, out, job)
                r = CliRunner().invoke(main, [*JOBS[job], "--run-dir", str(out / job)])
                assert r.exit_code == 0, r.output
    return out


@pytest.mark.parametrize("tag, method", [("live", "adapmtl"), ("frozen", "adapmtl"), ("resumed", "adapmtl"),
                                         ("resumed", "dense")])
def test_ranks_hold_identical_state_at_every_step(ddp, tag, method):
    out, _ = ddp
    r0, r1 = _load(out / f"{tag}-{method}-rank0.pt"), _load(out / f"{tag}-{method}-rank1.pt")
    assert r0["world"] == r1["world"] == 2 and r0["step"] == 20
    # parameters and BatchNorm buffers, thresholds/controller state, optimizer moments, task-weighting state
    for key in ("model", "method", "optimizer", "weighting"):
        _same(r0[key], r1[key], key)
    # per-step log (log_every=1): all-reduced losses, task weights, per-component thresholds and sparsity
    assert len(r0["timeseries"]) == 20 and r0["timeseries"] == r1["timeseries"]


def test_only_rank_zero_writes_and_the_checkpoint_is_the_ranks_state(ddp):
    out, stdout = ddp
    assert stdout.count("PASSED  | train") == 3  # live, frozen, resumed: printed by rank 0 only
    run = out / "live"
    assert sorted(p.name for p in (run / "train").iterdir()) == [
        "checkpoint.pt", "metrics.json", "sparsity.json", "timeseries.json"
    ]
    assert not (run / "train.tmp").exists()
    ckpt = _load(run / "train" / "checkpoint.pt")
    _same(ckpt["state_dict"], _load(out / "live-adapmtl-rank0.pt")["model"], "state_dict")


def test_resume_under_torchrun_continues_exactly(ddp):
    out, _ = ddp
    live, resumed = out / "live" / "train", out / "resumed" / "train"
    _same(_load(resumed / "checkpoint.pt")["state_dict"], _load(live / "checkpoint.pt")["state_dict"], "state_dict")
    assert json.loads((resumed / "metrics.json").read_text())["resumed_from_step"] == 10
    assert json.loads((resumed / "reference" / "metrics.json").read_text())["resumed_from_step"] == 10
    assert (resumed / "timeseries.json").read_bytes() == (live / "timeseries.json").read_bytes()


def _metrics(run: Path) -> dict:
    return json.loads((run / "train" / "metrics.json").read_text())


def _metric_diff(two: dict, one: dict) -> float:
    """max over metrics of |a - b| / max(|b|, 1)."""
    return max(
        abs(two["metrics"][t][k] - v) / max(abs(v), 1.0) for t in one["metrics"] for k, v in one["metrics"][t].items()
    )


def test_two_half_batches_match_one_full_batch_with_batchnorm_frozen(ddp, single):
    two, one = _load(ddp[0] / "frozen-adapmtl-rank0.pt"), _load(single / "frozen-adapmtl-rank0.pt")
    assert two["world"] == 2 and one["world"] == 1
    for key in ("losses", "task_weights", "thresholds"):
        rel = _series_rel(two["timeseries"], one["timeseries"], key)
        print(f"frozen BN, {key}: max rel diff {rel:.2e}")
        assert rel <= FROZEN_REL, key
    worst = max(
        float((two["model"][k] - v).norm() / v.norm().clamp_min(1e-12))
        for k, v in one["model"].items() if v.is_floating_point()
    )
    print(f"frozen BN, parameters: max per-tensor relative L2 diff {worst:.2e}")
    assert worst <= FROZEN_PARAM_REL
    assert _metric_diff(_metrics(ddp[0] / "frozen"), _metrics(single / "frozen")) <= FROZEN_METRIC_TOL


def test_two_half_batches_match_one_full_batch_within_batchnorm_tolerance(ddp, single):
    two, one = _load(ddp[0] / "live-adapmtl-rank0.pt"), _load(single / "live-adapmtl-rank0.pt")
    step0 = _series_rel(two["timeseries"], one["timeseries"], "losses", steps={0})
    losses = _series_rel(two["timeseries"], one["timeseries"], "losses")
    thresholds = _series_rel(two["timeseries"], one["timeseries"], "thresholds")
    m2, m1 = _metrics(ddp[0] / "live"), _metrics(single / "live")
    metric = _metric_diff(m2, m1)
    comp = max(abs(m2["sparsity"]["components"][c] - v) for c, v in m1["sparsity"]["components"].items())
    print(f"live BN: step-0 loss {step0:.2e}, losses {losses:.2e}, thresholds {thresholds:.2e}, "
          f"metrics {metric:.2e}, component sparsity {comp:.2e} (abs)")
    assert step0 <= LIVE_STEP0_REL and losses <= LIVE_LOSS_REL and thresholds <= LIVE_THRESHOLD_REL
    assert metric <= LIVE_METRIC_TOL and comp <= LIVE_COMPONENT_ABS
    assert m2["sparsity"]["overall"] == m1["sparsity"]["overall"]  # both solved exactly to the target


if __name__ == "__main__":  # torchrun entry point: python -m torch.distributed.run ... this_file OUT
    torch.set_num_threads(1)
    _worker(Path(sys.argv[1]))
