"""One finished tiny run for the whole integration session (`tiny_run`), shared read-only by every module.

Tests never change it: they copy it (`shutil.copytree(tiny_run.run, ...)`) or take a copy cut after a stage
(`tiny_run.copy_until(dst, "harden")`).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.artifacts import RunDir, atomic_write_json
from pipeline.cli import main
from pipeline.report import write_run_report
from pipeline.stages.base import STAGE_NAMES


def _skip_markdown_report(run, report):
    return run.root / "report.md"  # report.md's plots cost seconds and are not under test in a cut copy


@dataclass(frozen=True)
class TinyRun:
    run: Path  # `pipeline run all --config tiny` (dense reference included); build skips without TensorRT
    output: str  # what that command printed
    stray_files: list[str] = field(default_factory=list)  # files it wrote outside the run and the scene cache

    @property
    def work(self) -> Path:
        """The folder the run was made from (its scene cache is `work/.cache`): a cwd for commands on copies."""
        return self.run.parent

    def copy_until(self, dst: Path, until: str) -> Path:
        """A copy holding the stages up to `until` only, as `run all --until <until>` leaves it."""
        shutil.copytree(self.run, dst)
        later = STAGE_NAMES[STAGE_NAMES.index(until) + 1:]
        manifest = json.loads((dst / "manifest.json").read_text())
        for name in later:
            manifest["stages"].pop(name, None)
            shutil.rmtree(dst / name, ignore_errors=True)
        atomic_write_json(dst / "manifest.json", manifest)
        for p in ("report.json", "report.md", "report_plots"):
            if (dst / p).is_dir():
                shutil.rmtree(dst / p)
            elif (dst / p).exists():
                (dst / p).unlink()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr("pipeline.report.markdown.write_markdown_report", _skip_markdown_report)
            write_run_report(RunDir(dst, create=False))
        return dst


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    root = tmp_path_factory.mktemp("tiny_run")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # the scene cache goes to ./.cache
        result = CliRunner().invoke(
            main, ["run", "all", "--config", "tiny", "--run-dir", str(root / "run"), "--no-progress"],
            catch_exceptions=False,
        )
    assert result.exit_code == 0, result.output
    stray = sorted(
        str(p.relative_to(root)) for p in root.rglob("*")
        if p.is_file() and not p.is_relative_to(root / ".cache") and not p.is_relative_to(root / "run")
    )
    return TinyRun(root / "run", result.output, stray)
