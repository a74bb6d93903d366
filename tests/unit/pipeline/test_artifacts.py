"""The run directory and the one atomic writer (`atomic_path`) behind the text/json/bytes/torch wrappers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from pipeline.artifacts import (
    RunDir,
    atomic_path,
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    read_json,
    sha256_file,
)
from pipeline.errors import PipelineError


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_wrappers_write_and_leave_no_temp_files(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "a" / "t.txt", "héllo")
    atomic_write_bytes(tmp_path / "a" / "b.bin", b"\x00\x01")
    atomic_write_json(tmp_path / "a" / "j.json", {"x": torch.tensor(1.5), "p": Path("q")})
    atomic_torch_save({"w": torch.arange(3)}, tmp_path / "a" / "m.pt")
    folder = tmp_path / "a"
    assert (folder / "t.txt").read_text() == "héllo"
    assert (folder / "b.bin").read_bytes() == b"\x00\x01"
    assert json.loads((folder / "j.json").read_text()) == {"x": 1.5, "p": "q"}
    assert torch.equal(torch.load(folder / "m.pt")["w"], torch.arange(3))
    assert _leftovers(folder) == []


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    atomic_write_json(target, {"v": 1})
    with pytest.raises(TypeError):
        atomic_write_json(target, {"v": object()})  # fails while serialising, before anything is written
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert read_json(target) == {"v": 1}
    assert _leftovers(tmp_path) == []


def test_atomic_files_get_umask_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "p.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "p.txt").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


def test_read_json_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="does not exist"):
        read_json(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{trunc")
    with pytest.raises(PipelineError, match="re-run the stage"):
        read_json(tmp_path / "bad.json")


def test_rundir_refuses_paths_outside(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    assert run.path("train", "x.pt") == run.root / "train" / "x.pt"
    with pytest.raises(PipelineError, match="outside the run directory"):
        run.path("..", "escape.txt")
    with pytest.raises(PipelineError, match="does not exist"):
        RunDir(tmp_path / "missing", create=False)
    (tmp_path / "file").write_text("")
    with pytest.raises(PipelineError, match="is a file"):
        RunDir(tmp_path / "file")


def test_staging_commits_on_success_and_keeps_old_folder_on_failure(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    with run.staging("s") as tmp:
        (tmp / "out.txt").write_text("v1")
    assert (run.stage_dir("s") / "out.txt").read_text() == "v1"
    run.update_manifest(stages={"s": {"status": "ok"}})  # the engine records what it committed
    with pytest.raises(RuntimeError), run.staging("s") as tmp:
        (tmp / "out.txt").write_text("v2")
        raise RuntimeError("stage crashed")
    assert (run.stage_dir("s") / "out.txt").read_text() == "v1"
    # keep_partial keeps a resumable staging folder but drops half-written atomic temp files
    (tmp_path / "s.tmp" / ".x.pt.123.tmp").write_text("junk")
    with run.staging("s", keep_partial=True) as tmp:
        assert (tmp / "out.txt").read_text() == "v2" and not (tmp / ".x.pt.123.tmp").exists()


def test_manifest_updates_merge_stages_and_reject_corruption(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.update_manifest(stages={"a": {"status": "ok"}})
    run.update_manifest(stages={"b": {"status": "failed"}}, note=1)
    data = run.load_manifest()
    assert data["stages"] == {"a": {"status": "ok"}, "b": {"status": "failed"}} and data["note"] == 1
    (tmp_path / "x.txt").write_text("abc")
    assert run.file_record(tmp_path / "x.txt") == {"path": "x.txt", "sha256": sha256_file(tmp_path / "x.txt")}
    run.manifest_path.write_text("{")
    with pytest.raises(PipelineError, match="not valid JSON"):
        run.load_manifest()
