"""Interruptions: a SIGKILLed `pipeline train` resumes to the bit-identical result (main run and dense reference),
a killed export is never trusted by the next stage, and a diverging loss stops cleanly with the last good
checkpoint kept. See docs/reliability.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from pipeline.cli import main

# The tiny preset: 30 steps with a resume point every 10 (pruned model, then the dense reference).
TRAIN = ["--config", "tiny", "--no-progress"]
VOLATILE = {"train_seconds", "mean_step_seconds", "resumed_from_step"}  # wall-clock and bookkeeping only


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TQDM_DISABLE="1", PYTHONUNBUFFERED="1")


def _pipeline(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", *args]


def _kill_when(cwd: Path, marker: Path, *args: str, timeout: float = 120.0) -> None:
    """Start `pipeline *args`, SIGKILL it as soon as `marker` exists (no cleanup handlers run)."""
    log = cwd / "killed.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(_pipeline(*args), cwd=cwd, env=_env(), stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        try:
            while not marker.exists():
                if proc.poll() is not None:
                    pytest.fail(f"process ended (rc {proc.returncode}) before {marker} appeared:\n{log.read_text()}")
                if time.monotonic() > deadline:
                    pytest.fail(f"{marker} did not appear within {timeout} s:\n{log.read_text()}")
                time.sleep(0.005)
            proc.send_signal(signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL


def _invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _assert_same_tensors(a, b, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same_tensors(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def _json(p: Path):
    return json.loads(p.read_text())


def _skip_markdown_report(run, report):
    return run.root / "report.md"  # report.md's plots cost seconds per command and are not under test here


@pytest.fixture(autouse=True)
def no_plots(monkeypatch):
    monkeypatch.setattr("pipeline.report.markdown.write_markdown_report", _skip_markdown_report)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """Working folder of this module (the subprocesses' cwd: the scene cache lands in its .cache/)."""
    return tmp_path_factory.mktemp("kill")


@pytest.fixture(scope="module")
def hardened(tiny_run, work) -> Path:
    """The session's tiny run cut after harden, shared read-only: tests work on copies."""
    return tiny_run.copy_until(work / "hardened", "harden")


def test_sigkill_during_training_and_dense_reference_resumes_bit_identically(work, monkeypatch):
    full, killed = work / "full", work / "killed"
    monkeypatch.chdir(work)
    done = _invoke("train", *TRAIN, "--run-dir", str(full))  # in-process: 1 torch thread, as the subprocesses
    assert done.exit_code == 0, done.output

    # 1. killed while training the pruned model: nothing committed, the resume point is kept in train.tmp/
    _kill_when(work, killed / "train.tmp" / "resume.pt", "train", *TRAIN, "--run-dir", str(killed))
    assert not (killed / "train").exists()
    assert "train" not in _json(killed / "manifest.json")["stages"]
    # 2. the same command resumes, finishes the pruned model, and is killed while training the dense reference
    _kill_when(work, killed / "train.tmp" / "reference" / "resume.pt", "train", *TRAIN, "--run-dir", str(killed))
    assert (killed / "train.tmp" / "checkpoint.pt").exists() and not (killed / "train.tmp" / "resume.pt").exists()
    assert not (killed / "train").exists()
    # 3. the same command again finishes the job without training the pruned model a third time
    done = _invoke("train", *TRAIN, "--run-dir", str(killed))
    assert done.exit_code == 0, done.output
    assert not (killed / "train.tmp").exists()

    for rel in ("train", "train/reference"):
        a, b = torch.load(full / rel / "checkpoint.pt", weights_only=True), torch.load(
            killed / rel / "checkpoint.pt", weights_only=True
        )
        _assert_same_tensors(a["state_dict"], b["state_dict"], f"{rel} state_dict")
        _assert_same_tensors(a["method"], b["method"], f"{rel} method")
        assert a["sparsity"] == b["sparsity"]
        ma, mb = _json(full / rel / "metrics.json"), _json(killed / rel / "metrics.json")
        assert ma["resumed_from_step"] is None and mb["resumed_from_step"] >= 10  # it really resumed
        assert {k: v for k, v in ma.items() if k not in VOLATILE} == {k: v for k, v in mb.items() if k not in VOLATILE}
        for name in ("sparsity.json", "timeseries.json"):
            assert (full / rel / name).read_bytes() == (killed / rel / name).read_bytes(), f"{rel}/{name}"
    assert "reference" in _json(killed / "train" / "metrics.json")  # delta_t / delta_p were computed
    assert not list(killed.rglob(".*.tmp")), "a killed atomic write left a temp file behind"


def test_killed_export_is_never_trusted(hardened, work, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(hardened, run)
    monkeypatch.chdir(work)

    # first export killed: nothing committed; plant a half-written model.onnx in the staging folder as well
    _kill_when(work, run / "export.tmp", "export", "--run-dir", str(run), "--no-progress")
    (run / "export.tmp" / "model.onnx").write_bytes(b"\x08\x09partial onnx")
    assert not (run / "export").exists()
    assert "export" not in _json(run / "manifest.json")["stages"]
    r = _invoke("validate", "--run-dir", str(run), "--no-progress")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert f"run `pipeline export --run-dir {run}` first" in r.output

    # `run all` redoes the export from scratch (the partial staging folder is discarded) and validates it
    r = _invoke("run", "all", "--run-dir", str(run), "--no-progress")
    assert r.exit_code == 0, r.output
    assert "PASSED  | export" in r.output and "PASSED  | validate" in r.output
    assert not (run / "export.tmp").exists()
    import onnx

    onnx.checker.check_model(str(run / "export" / "model.onnx"))

    # an export killed while replacing a good one can only have touched export.tmp/ (simulated here): the
    # committed export and the manifest stay as they were and nothing is stale
    before, manifest = _hashes(run / "export"), (run / "manifest.json").read_bytes()
    (run / "export.tmp").mkdir()
    (run / "export.tmp" / "model.onnx").write_bytes(b"\x08\x09partial onnx")
    assert _hashes(run / "export") == before and (run / "manifest.json").read_bytes() == manifest
    r = _invoke("run", "all", "--run-dir", str(run), "--no-progress")
    assert r.exit_code == 0, r.output
    # nothing stale, nothing redone: the four ok stages; quantize (mode none) and build (no TensorRT) were skipped,
    # and a skipped stage is always checked again
    assert r.output.count("(up to date)") == 4


def test_diverging_loss_stops_cleanly_and_keeps_the_last_good_checkpoint(hardened, work, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(hardened, run)
    monkeypatch.chdir(work)
    train_before = _hashes(run / "train")
    entry_before = _json(run / "manifest.json")["stages"]["train"]
    # lr x 1e9 from step 11 on: the loss turns NaN/Inf a few steps after the step-10 resume point
    r = _invoke("train", "--run-dir", str(run), "--force", "--no-progress", "--set", "train.lr_schedule=step",
                "--set", "train.step_size=11", "--set", "train.gamma=1e9")
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    msg = r.output.strip().splitlines()[-1]
    assert msg.startswith("error: loss of task '") and " at step " in msg and "train.lr" in msg
    step = int(msg.split(" at step ")[1].split(";")[0])
    # the committed checkpoint and its manifest entry are untouched; the resume point predates the divergence
    assert _hashes(run / "train") == train_before
    assert _json(run / "manifest.json")["stages"]["train"] == entry_before
    from pipeline.checkpoint import load_checkpoint

    resume = load_checkpoint(run / "train.tmp" / "resume.pt", "resume")
    assert 10 <= resume["trainer"]["step"] < step
    assert all(torch.isfinite(v).all() for v in resume["trainer"]["model"].values() if v.is_floating_point())
