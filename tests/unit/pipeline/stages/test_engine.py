"""The stage engine (`pipeline.stages`) on a table of fake stages: staging, manifest, staleness, followers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import pipeline.stages as engine
from pipeline.artifacts import RunDir
from pipeline.config import RunConfig, load_config
from pipeline.errors import CheckFailed, MissingArtifactError, PipelineError, StaleArtifactError
from pipeline.stages.base import STAGE_NAMES, Stage, StageContext, StageRecord


def _first(ctx: StageContext) -> StageRecord:
    (ctx.out / "a.txt").write_text(f"lr={ctx.cfg.train.lr}")
    return StageRecord(outputs=["a.txt"], summary={"n": 1})


def _second(ctx: StageContext) -> StageRecord:
    text = ctx.run.path("first", "a.txt").read_text()
    (ctx.out / "b.txt").write_text(text + "!")
    if ctx.options.get("fail"):
        return StageRecord(status="failed", reason="tolerance exceeded", outputs=["b.txt"])
    return StageRecord(outputs=["b.txt"])


def _resumable(ctx: StageContext) -> StageRecord:
    seen = (ctx.out / "resume.txt").read_text() if (ctx.out / "resume.txt").exists() else ""
    (ctx.out / "done.txt").write_text(seen + "+")
    return StageRecord(outputs=["done.txt"], summary={"resumed_from": seen})


FAKE = (
    Stage("first", _first, (), ("train",)),
    Stage("second", _second, ("first/a.txt",), ("export",)),
    Stage("resumable", _resumable, (), ("train",), keep_partial=True),
)


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RunDir:
    monkeypatch.setattr(engine, "_stage_table", lambda: FAKE)
    return RunDir(tmp_path / "run")


def test_the_real_table_follows_stage_names() -> None:
    assert tuple(s.name for s in engine._stage_table()) == STAGE_NAMES
    with pytest.raises(PipelineError, match="unknown stage 'nope'"):
        engine.get_stage("nope")


def test_execute_commits_outputs_and_records_them(run: RunDir) -> None:
    cfg = RunConfig()
    assert engine.stage_state(run, cfg, engine.get_stage("first")) == ("missing", "not run yet")
    engine.execute_stage(run, cfg, "first")
    entry = run.load_manifest()["stages"]["first"]
    assert entry["status"] == "ok" and entry["summary"] == {"n": 1}
    assert [o["path"] for o in entry["outputs"]] == ["first/a.txt"]
    assert entry["config_key"] == engine.config_key(cfg, engine.get_stage("first"))
    assert not run.path("first.tmp").exists()
    assert engine.stage_state(run, cfg, engine.get_stage("first"))[0] == "ok"
    engine.execute_stage(run, cfg, "second")
    assert run.path("second", "b.txt").read_text() == "lr=0.001!"
    assert run.load_manifest()["stages"]["second"]["inputs"][0]["path"] == "first/a.txt"


def test_missing_and_modified_inputs_name_the_command(run: RunDir) -> None:
    cfg = RunConfig()
    with pytest.raises(MissingArtifactError, match="needs first/a.txt.*run `pipeline first --run-dir"):
        engine.execute_stage(run, cfg, "second")
    engine.execute_stage(run, cfg, "first")
    run.path("first", "a.txt").write_text("tampered")
    assert engine.stage_state(run, cfg, engine.get_stage("first"))[0] == "stale"
    with pytest.raises(StaleArtifactError, match="modified after stage 'first' wrote it"):
        engine.execute_stage(run, cfg, "second")


def test_only_the_stage_config_sections_make_it_stale(run: RunDir) -> None:
    cfg = RunConfig()
    engine.execute_stage(run, cfg, "first")
    engine.execute_stage(run, cfg, "second")
    changed = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr=0.5))
    assert engine.stage_state(run, changed, engine.get_stage("first")) == ("stale", "its config sections changed")
    assert engine.stage_state(run, changed, engine.get_stage("second"))[0] == "ok"
    engine.execute_stage(run, changed, "first")
    assert engine.stage_state(run, changed, engine.get_stage("second")) == ("stale", "input first/a.txt changed")


def test_a_failed_check_is_recorded_and_raised(run: RunDir) -> None:
    cfg = RunConfig()
    engine.execute_stage(run, cfg, "first")
    with pytest.raises(CheckFailed, match="stage 'second' failed: tolerance exceeded") as e:
        engine.execute_stage(run, cfg, "second", {"fail": True})
    assert e.value.exit_code == 3
    assert run.load_manifest()["stages"]["second"]["status"] == "failed"


def test_a_crashing_stage_leaves_no_record(run: RunDir, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(ctx: StageContext) -> StageRecord:
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "_stage_table", lambda: (Stage("first", crash, (), ("train",)),))
    with pytest.raises(KeyboardInterrupt):
        engine.execute_stage(run, RunConfig(), "first")
    assert "first" not in run.load_manifest()["stages"] and not run.stage_dir("first").exists()


def test_follower_runs_from_a_copy_and_writes_nothing_in_the_run(run: RunDir) -> None:
    partial = run.path("resumable.tmp")
    partial.mkdir()
    (partial / "resume.txt").write_text("step7")
    calls = []
    record = engine.follow_stage(run.root, RunConfig(), "resumable", after_copy=lambda: calls.append("barrier"))
    assert calls == ["barrier"] and record.summary == {"resumed_from": "step7"}
    assert sorted(p.name for p in run.root.iterdir()) == ["resumable.tmp"]
    assert sorted(p.name for p in partial.iterdir()) == ["resume.txt"]
    assert "resumable" not in run.load_manifest()["stages"]


def test_write_config_round_trips(run: RunDir) -> None:
    cfg = RunConfig()
    engine.write_config(run, cfg)
    assert load_config(str(run.config_path)) == cfg
    assert run.load_manifest()["config"]["path"] == "config.yaml"
