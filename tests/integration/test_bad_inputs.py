"""Bad inputs: each is answered by one line that says what is wrong and how to fix it, exit code 1 (2 for click
usage errors), no traceback, and nothing previously written is lost. The catalogue is docs/bad_inputs.md.

The last section checks the safety rules: checkpoints load with weights_only=True, arrays with allow_pickle=False,
config values are never evaluated, and stage paths stay inside their run directory.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.orchestrate import resolve_run

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("pipeline", "trainers", "exporters", "deploy")
TINY = ["--config", "tiny", "--no-progress"]
FAST = [*TINY, "--set", "dense_reference=null", "--steps", "2"]


# -- helpers ----------------------------------------------------------------------------------------------------


def _skip_markdown_report(run, report):
    return run.root / "report.md"  # report.md's plots cost seconds per command and are not under test here


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setattr("pipeline.report.markdown.write_markdown_report", _skip_markdown_report)


def fails(args: list[str], *needles: str, code: int = 1) -> str:
    """Run the CLI in-process; assert a clean failure with one `error:` line holding `needles`; return it."""
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    if code == 2:  # click usage error: its own short usage text on stderr
        assert "Error:" in r.stderr
        return r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"
    return lines[0]


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bad")


@pytest.fixture(scope="module")
def finished(tiny_run) -> Path:
    """The session's finished tiny run (train .. validate; build skips without TensorRT), shared read-only."""
    return tiny_run.run


@pytest.fixture(scope="module")
def other_checkpoint(work) -> Path:
    """A train checkpoint of a different model (seg-only heads, narrower) from a 2-step run."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        mp.setattr("pipeline.report.markdown.write_markdown_report", _skip_markdown_report)
        r = CliRunner().invoke(main, ["train", *FAST, "--set", "tasks=[seg]", "--set", "model.kwargs={head_width: 16}",
                                      "--run-dir", str(work / "other")])
    assert r.exit_code == 0, r.output
    return work / "other" / "train" / "checkpoint.pt"


@pytest.fixture
def run_copy(finished, work, tmp_path, monkeypatch) -> Path:
    """A private copy of the finished run, with its snapshot checked unchanged after the test."""
    monkeypatch.chdir(work)
    dst = tmp_path / "run"
    shutil.copytree(finished, dst)
    return dst


@pytest.fixture
def in_work(work, monkeypatch):
    monkeypatch.chdir(work)  # the scene cache lives in work/.cache
    return work


def mtan(root: Path, mutate=None, n: int = 4, h: int = 32, w: int = 40) -> Path:
    """A small dataset in the MTAN layout; `mutate(split, i, arrays)` may spoil one sample."""
    for split in ("train", "val"):
        for i in range(n):
            rng = np.random.default_rng(i)
            arrays = {
                "image": rng.random((h, w, 3)).astype(np.float32),
                "label": rng.integers(-1, 13, (h, w)).astype(np.int64),
                "depth": (0.5 + 4 * rng.random((h, w, 1))).astype(np.float32),
                "normal": np.tile(np.array([0.0, 0.0, 1.0], np.float32), (h, w, 1)),
            }
            if mutate:
                mutate(split, i, arrays)
            for folder, a in arrays.items():
                (root / split / folder).mkdir(parents=True, exist_ok=True)
                np.save(root / split / folder / f"{i}.npy", a)
    return root


def train_on(root: Path, run_dir: Path) -> list[str]:
    return ["train", *FAST, "--set", "data.name=nyuv2_mtan", "--set", f"data.root={root}", "--run-dir", run_dir]


def nothing_trained(run_dir: Path) -> None:
    assert not (run_dir / "train").exists()
    if (run_dir / "manifest.json").exists():
        assert "train" not in json.loads((run_dir / "manifest.json").read_text())["stages"]


# -- data -------------------------------------------------------------------------------------------------------


def test_dataset_directory_missing(tmp_path, in_work):
    fails(train_on(tmp_path / "nowhere", tmp_path / "r"), "nowhere: dataset directory does not exist", "expected")
    nothing_trained(tmp_path / "r")


def test_dataset_directory_empty(tmp_path, in_work):
    (tmp_path / "empty").mkdir()
    fails(train_on(tmp_path / "empty", tmp_path / "r"), "train: split directory is missing", "expected")
    nothing_trained(tmp_path / "r")


def test_array_of_the_wrong_shape(tmp_path, in_work):
    root = mtan(tmp_path / "d", lambda s, i, a: a.update(depth=np.ones((10, 10), np.float32)) if i == 2 else None)
    fails(train_on(root, tmp_path / "r"), "depth/2.npy: shape (10, 10), expected (32, 40, 1) or (32, 40)")
    nothing_trained(tmp_path / "r")


def test_array_of_the_wrong_dtype(tmp_path, in_work):
    root = mtan(tmp_path / "d", lambda s, i, a: a.update(label=np.zeros((32, 40), np.uint8)) if i == 1 else None)
    fails(train_on(root, tmp_path / "r"), "label/1.npy: dtype uint8 is not a signed integer or float dtype")
    nothing_trained(tmp_path / "r")


def test_label_outside_the_class_range_found_while_training(tmp_path, in_work):
    """Values are checked when a sample is loaded (lazily): training stops with the file named, not a traceback."""
    root = mtan(tmp_path / "d", lambda s, i, a: a["label"].__setitem__((0, 0), 40) if s == "train" and i == 3 else None)
    fails(train_on(root, tmp_path / "r"), "train/label/3.npy: labels in [-1, 40], expected -1 (ignore) or 0..12")
    nothing_trained(tmp_path / "r")


def test_nan_depth_found_by_the_evaluation_dataloader(tmp_path, in_work):
    """NaN depth in a val sample: training runs, then the val DataLoader (in-process) reports the file."""
    root = mtan(tmp_path / "d", lambda s, i, a: a["depth"].__setitem__((5, 5, 0), np.nan) if s == "val" and i == 1 else None)
    fails(train_on(root, tmp_path / "r"), "val/depth/1.npy: 1 NaN/Inf depth values; expected finite metres")
    nothing_trained(tmp_path / "r")


# -- config -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--set", "model.name=resnet9000"], ["unknown model 'resnet9000' (available: ", "tiny_mtl"]),
        (["--method", "magic"], ["unknown sparsity method 'magic' (available: ", "adapmtl"]),
        (["--set", "tasks=[seg,edges]"], ["unknown task 'edges' in 'tasks' (available: seg, depth, normal)"]),
        (["--sparsity", "1.5"], ["'sparsity.target' = 1.5 must be in (0, 1), e.g. 0.9"]),
        (["--sparsity", "0"], ["'sparsity.target' = 0.0 must be in (0, 1)"]),
        (["--set", "tasks={semantic: seg, z: edges}"],
         ["unknown kind 'edges' of task 'z' in 'tasks' (available: seg, depth, normal)"]),
        (["--set", "tasks=[seg,depth,seg]"], ["'tasks' lists a task twice: seg"]),
        (["--set", "tasks={z: depth, z: seg}"], ["override 'tasks={z: depth, z: seg}': duplicate key 'z'"]),
        (["--set", "tasks={sem.x: seg}"], ["task name 'sem.x' in 'tasks' must be a plain identifier"]),
        (["--set", "tasks={depth: seg}"], ["task 'depth' in 'tasks' is named after another kind"]),
    ],
    ids=["unknown-model", "unknown-method", "unknown-task", "sparsity-above-1", "sparsity-zero", "unknown-task-kind",
         "task-listed-twice", "task-name-twice", "task-name-not-identifier", "task-named-after-another-kind"],
)
def test_unknown_name_or_value_out_of_range(args, needles, tmp_path):
    fails(["train", *TINY, *args, "--run-dir", tmp_path / "r"], *needles)
    assert not (tmp_path / "r").exists()  # the config is checked before anything is written


def test_unknown_preset(tmp_path):
    fails(["train", "--config", "tinyy", "--run-dir", tmp_path / "r"], "unknown preset 'tinyy' (available: ", "tiny")
    assert not (tmp_path / "r").exists()


def test_config_file_missing(tmp_path):
    fails(["check-config", tmp_path / "nope.yaml"], "nope.yaml does not exist; give a YAML path or a preset")


def test_malformed_yaml_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {steps: 3\nmodel: [\n")
    fails(["train", "--config", bad, "--run-dir", tmp_path / "r"], "bad.yaml is not valid YAML (line ", "fix the syntax")
    assert not (tmp_path / "r").exists()


def test_set_without_equals(tmp_path):
    fails(["train", *TINY, "--set", "train.steps", "--run-dir", tmp_path / "r"],
          "override 'train.steps' must look like key.path=value")


def test_unknown_config_key_suggests_the_right_one(tmp_path):
    fails(["check-config", "tiny", "--set", "train.stpes=3"],
          "unknown key 'train.stpes' (did you mean 'steps'? known: ", "checkpoint_every")


def test_config_with_several_mistakes_reports_all_at_once(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("extends: tiny\ntrain: {steps: -1, lr: fast}\nmodel: {name: x}\nsparsity: {target: 2}\nfoo: 1\n")
    msg = fails(["train", "--config", cfg, "--run-dir", tmp_path / "r"], "5 config problems: ")
    for part in ("'train.lr' = 'fast' is not float", "unknown key 'foo'", "unknown model 'x'",
                 "'sparsity.target' = 2.0 must be in (0, 1)", "'train.steps' = -1 must be positive"):
        assert part in msg


def test_changed_config_on_an_existing_run_without_force(run_copy):
    before = snapshot(run_copy)
    fails(["train", "--run-dir", run_copy, "--set", "train.steps=5"],
          "was created with a different config (differs in train.steps); pass --force", "or use a new --run-dir")
    assert snapshot(run_copy) == before


def test_click_usage_errors_exit_2(tmp_path):
    assert "No such option '--stepz'" in fails(["train", "--stepz", "3"], code=2)
    assert "'abc' is not a valid integer" in fails(["train", "--steps", "abc"], code=2)


# -- run directory and artifacts --------------------------------------------------------------------------------


def test_run_directory_is_a_file(tmp_path):
    f = tmp_path / "afile"
    f.write_text("keep me")
    fails(["train", *TINY, "--run-dir", f], "run directory", "is a file; choose a directory path with --run-dir")
    assert f.read_text() == "keep me"


def test_run_directory_cannot_be_created_under_a_file(tmp_path):
    (tmp_path / "afile").write_text("keep me")
    fails(["train", *TINY, "--run-dir", tmp_path / "afile" / "run"],
          "cannot create run directory", "Not a directory; choose another --run-dir")


def test_run_directory_not_writable(run_copy, monkeypatch):
    """Tests run as root, for whom os.access says yes to everything (and chmod is ignored): the check's answer is
    simulated for this directory only."""
    real = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode, **kw: False if Path(p) == run_copy and mode & os.W_OK else real(p, mode, **kw)
    )
    before = snapshot(run_copy)
    fails(["harden", "--run-dir", run_copy], "is not writable; fix its permissions or choose another --run-dir")
    assert snapshot(run_copy) == before


def test_stage_run_before_its_inputs_exist(tmp_path):
    fails(["harden", "--config", "tiny", "--run-dir", tmp_path / "empty"],
          "stage 'harden' needs train/checkpoint.pt, which does not exist; run `pipeline train --run-dir ")


def test_truncated_checkpoint(run_copy):
    ckpt = run_copy / "train" / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:4096])
    before = snapshot(run_copy)
    fails(["harden", "--run-dir", run_copy], "needs train/checkpoint.pt, which was modified after stage 'train' wrote it",
          "run `pipeline train --run-dir ")
    assert snapshot(run_copy) == before


def test_checkpoint_of_a_different_model(run_copy, other_checkpoint):
    shutil.copy(other_checkpoint, run_copy / "train" / "checkpoint.pt")
    before = snapshot(run_copy)
    fails(["harden", "--run-dir", run_copy], "needs train/checkpoint.pt, which was modified after stage 'train' wrote it")
    assert snapshot(run_copy) == before


def test_dense_init_from_a_different_model(tmp_path, in_work, other_checkpoint):
    fails(["train", *FAST, "--set", f"train.dense_init={other_checkpoint}", "--run-dir", tmp_path / "r"],
          "does not fit this model: ", "written for a different model or task set")
    nothing_trained(tmp_path / "r")


def test_dense_init_truncated(tmp_path, in_work, other_checkpoint):
    bad = tmp_path / "half.pt"
    bad.write_bytes(other_checkpoint.read_bytes()[:2000])
    fails(["train", *FAST, "--set", f"train.dense_init={bad}", "--run-dir", tmp_path / "r"],
          "half.pt cannot be read (truncated or corrupted", "re-run the stage that wrote it")


def test_truncated_onnx(run_copy):
    onnx_path = run_copy / "export" / "model.onnx"
    onnx_path.write_bytes(onnx_path.read_bytes()[:5000])
    before = snapshot(run_copy)
    fails(["validate", "--run-dir", run_copy], "needs export/model.onnx, which was modified after stage 'export'",
          "run `pipeline export --run-dir ")
    assert snapshot(run_copy) == before


def test_two_four_requested_where_no_layer_is_eligible(run_copy):
    """--force replaces config.yaml and its manifest record (that is what it is for); every artifact and every
    stage record stay as they were."""
    before, stages = snapshot(run_copy), json.loads((run_copy / "manifest.json").read_text())["stages"]
    fails(["harden", "--run-dir", run_copy, "--force", "--set", "harden.pattern=2:4", "--set", "harden.min_channels=1024"],
          "harden.pattern=2:4: no layer is eligible for 2:4", "use harden.pattern=unstructured")
    after = snapshot(run_copy)
    # a failed stage still writes the run report (report.json with the failing stage and its reason)
    config_files = ("config.yaml", "manifest.json", "report.json", "report.md")
    assert {k: v for k, v in after.items() if k not in config_files} == {
        k: v for k, v in before.items() if k not in config_files
    }
    assert json.loads((run_copy / "manifest.json").read_text())["stages"] == stages
    failed = json.loads((run_copy / "report.json").read_text())["failed_stage"]
    assert failed["stage"] == "harden" and "no layer is eligible for 2:4" in failed["reason"]


def test_corrupted_manifest(run_copy):
    (run_copy / "manifest.json").write_text('{"schema": ')
    before = snapshot(run_copy)
    fails(["show", "--run-dir", run_copy], "manifest.json is not valid JSON", "delete it and run `pipeline run all")
    fails(["harden", "--run-dir", run_copy], "manifest.json is not valid JSON")
    assert snapshot(run_copy) == before


def test_damaged_resume_point_is_ignored_with_a_warning(tmp_path, in_work, caplog):
    """A resume point is only a shortcut: a damaged one is logged (a WARNING line on stderr) and training starts
    over, rather than blocking every re-run."""
    run = tmp_path / "r"
    resolve_run(run, "tiny", ["dense_reference=null", "train.steps=2"])  # the run exists, as after a kill
    (run / "train.tmp").mkdir(parents=True)
    (run / "train.tmp" / "resume.pt").write_bytes(b"PK\x03\x04 not a checkpoint")
    r = CliRunner().invoke(main, ["train", *FAST, "--run-dir", run])
    assert r.exit_code == 0, r.output
    warnings = [rec.getMessage() for rec in caplog.records if rec.levelname == "WARNING"]
    assert any("ignoring the resume point" in w and "training from step 0" in w for w in warnings), warnings
    assert (run / "train" / "checkpoint.pt").exists()


# -- safety -----------------------------------------------------------------------------------------------------


def _calls(name_ok):
    """(file, line, call node) for every call in the packages whose dotted name satisfies `name_ok`."""
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Call):
                    name = ast.unparse(node.func)
                    if name_ok(name):
                        yield path.relative_to(REPO), node.lineno, node


def _kw(node: ast.Call, key: str):
    for k in node.keywords:
        if k.arg == key:
            return k.value.value if isinstance(k.value, ast.Constant) else ast.unparse(k.value)
    return "<missing>"


def test_every_torch_load_uses_weights_only_and_every_np_load_refuses_pickles():
    bad = [f"{f}:{n} torch.load without weights_only=True" for f, n, c in _calls(lambda s: s.endswith("torch.load"))
           if _kw(c, "weights_only") is not True]
    bad += [f"{f}:{n} np.load without allow_pickle=False" for f, n, c in
            _calls(lambda s: s in ("np.load", "numpy.load")) if _kw(c, "allow_pickle") is not False]
    bad += [f"{f}:{n} {ast.unparse(c.func)}" for f, n, c in _calls(
        lambda s: s in ("eval", "exec", "pickle.load", "pickle.loads", "yaml.unsafe_load", "yaml.full_load",
                        "marshal.loads", "np.fromfile"))]
    bad += [f"{f}:{n} yaml.load with a loader other than the safe _Loader" for f, n, c in
            _calls(lambda s: s == "yaml.load") if _kw(c, "Loader") != "_Loader"]
    assert not bad, bad
    assert any(True for _ in _calls(lambda s: s.endswith("torch.load")))  # the scan does see the loader


class _Boom:
    def __reduce__(self):
        return (os.system, (f"touch {_Boom.marker}",))


def test_pickled_checkpoint_is_refused_without_running_it(tmp_path, in_work):
    _Boom.marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "mtl-compress.checkpoint/1", "kind": "train", "payload": _Boom()}, evil)
    fails(["train", *FAST, "--set", f"train.dense_init={evil}", "--run-dir", tmp_path / "r"],
          "evil.pt holds Python objects besides tensors", "weights_only=True", "use a checkpoint it wrote")
    assert not _Boom.marker.exists()


def test_pickled_npy_is_refused_without_running_it(tmp_path, in_work):
    _Boom.marker = tmp_path / "pwned"
    root = mtan(tmp_path / "d")
    payload = np.empty((32, 40, 1), dtype=object)
    payload[0, 0, 0] = _Boom()
    np.save(root / "train" / "depth" / "0.npy", payload, allow_pickle=True)
    fails(train_on(root, tmp_path / "r"), "depth/0.npy: dtype object is not a float dtype")
    assert not _Boom.marker.exists()


def test_config_values_are_never_evaluated(tmp_path):
    marker = tmp_path / "pwned"
    fails(["check-config", "tiny", "--set", f"train.lr=__import__('os').system('touch {marker}')"],
          "'train.lr' = ", "is not float")
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(f"extends: tiny\ntrain: !!python/object/apply:os.system ['touch {marker}']\n")
    fails(["check-config", cfg], "evil.yaml (line 2): could not determine a constructor",
          "configs hold plain values only")
    assert not marker.exists()


def test_run_dir_paths_stay_inside(tmp_path):
    from pipeline.artifacts import RunDir
    from pipeline.errors import PipelineError

    run = RunDir(tmp_path / "run")
    assert run.path("train", "checkpoint.pt") == run.root / "train" / "checkpoint.pt"
    with pytest.raises(PipelineError, match="outside the run directory"):
        run.path("..", "elsewhere.txt")
    with pytest.raises(PipelineError, match="outside the run directory"):
        run.path("/etc/passwd")
    os.symlink(tmp_path, run.root / "escape")  # a link inside the run pointing out of it
    with pytest.raises(PipelineError, match="outside the run directory"):
        run.path("escape", "x")


def test_a_whole_run_writes_only_inside_its_run_directory_and_the_data_cache(tiny_run, finished, work):
    assert tiny_run.stray_files == []
    outside = [p for p in work.rglob("*") if p.is_file() and not p.is_relative_to(work / ".cache")
               and not p.is_relative_to(work / "other")]
    assert outside == []
    assert not list(finished.glob("*.tmp")) and not list(finished.rglob(".*.tmp"))
