"""npz and Polygraphy-JSON round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deploy.io import (
    load_npz,
    load_polygraphy_inputs,
    load_polygraphy_outputs,
    outputs_filename,
    save_npz,
    save_polygraphy_inputs,
    save_polygraphy_outputs,
    split_batches,
)
from pipeline.errors import DataError, MissingArtifactError


def _arrays():
    rng = np.random.default_rng(0)
    return {"image": rng.random((5, 3, 4, 4), dtype=np.float32), "seg": rng.integers(-1, 4, (5, 4, 4))}


def test_npz_round_trip(tmp_path):
    path = tmp_path / "sub" / outputs_filename("onnxrt")
    assert path.name == "outputs_onnxrt.npz"
    save_npz(path, _arrays())
    loaded = load_npz(path, keys=["image"])
    for k, v in _arrays().items():
        np.testing.assert_array_equal(loaded[k], v)
        assert loaded[k].dtype == v.dtype
    assert sorted(p.name for p in path.parent.iterdir()) == ["outputs_onnxrt.npz"]


def test_npz_refuses_objects_and_reports_problems(tmp_path):
    with pytest.raises(TypeError, match="object dtype"):
        save_npz(tmp_path / "x.npz", {"bad": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(MissingArtifactError):
        load_npz(tmp_path / "absent.npz")
    save_npz(tmp_path / "x.npz", _arrays())
    with pytest.raises(DataError, match="lacks arrays \\['depth'\\]"):
        load_npz(tmp_path / "x.npz", keys=["image", "depth"])
    np.savez(tmp_path / "pickled.npz", obj=np.array([None, {}], dtype=object))
    with pytest.raises(DataError, match="not a readable npz"):
        load_npz(tmp_path / "pickled.npz")


def test_split_batches():
    feeds = split_batches({"image": np.zeros((5, 3, 2, 2))}, 2)
    assert [f["image"].shape[0] for f in feeds] == [2, 2, 1]
    with pytest.raises(ValueError):
        split_batches({"a": np.zeros(3), "b": np.zeros(4)}, 2)


def test_polygraphy_inputs_format(tmp_path):
    feeds = split_batches({"image": _arrays()["image"]}, 2)
    path = save_polygraphy_inputs(tmp_path / "inputs.json", feeds)
    raw = json.loads(path.read_text())
    assert isinstance(raw, list) and len(raw) == 3
    assert raw[0]["image"]["polygraphy_class"] == "ndarray" and isinstance(raw[0]["image"]["array"], str)
    back = load_polygraphy_inputs(path)
    np.testing.assert_array_equal(back[2]["image"], feeds[2]["image"])


def test_polygraphy_outputs_format(tmp_path):
    outs = [{"seg": np.ones((1, 2, 2), np.float32)}, {"seg": np.zeros((1, 2, 2), np.float32)}]
    path = save_polygraphy_outputs(
        tmp_path / "outputs.json", outs, runner_name="onnxrt-runner", runtime_s=0.5
    )
    raw = json.loads(path.read_text())
    assert raw["polygraphy_class"] == "RunResults"
    name, iters = raw["lst"][0]
    assert name == "onnxrt-runner" and iters[0]["polygraphy_class"] == "IterationResult"
    assert iters[0]["outputs"]["seg"]["polygraphy_class"] == "LazyArray"
    back = load_polygraphy_outputs(path)
    np.testing.assert_array_equal(back["onnxrt-runner"][1]["seg"], outs[1]["seg"])


def test_readable_by_polygraphy_when_installed(tmp_path):
    pg_json = pytest.importorskip("polygraphy.json")
    from polygraphy.comparator import RunResults

    feeds = [{"image": _arrays()["image"][:2]}]
    loaded = pg_json.load_json(str(save_polygraphy_inputs(tmp_path / "in.json", feeds)))
    np.testing.assert_array_equal(loaded[0]["image"], feeds[0]["image"])
    results = RunResults.load(str(save_polygraphy_outputs(tmp_path / "out.json", feeds, "torch")))
    np.testing.assert_array_equal(results["torch"][0]["image"], feeds[0]["image"])
