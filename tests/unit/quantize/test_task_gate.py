"""The task-level int8 gate: passes on the real quantized model, fails (naming head and number) on a broken
QDQ scale, and ranks results by their worst ratio."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from deploy.task_gate import GateCheck, GateResult, GateTolerances, gate_judge, run_task_gate, task_gate
from exporters.quantize import conv_nodes, quantize_int8
from exporters.quantize_search import search_fp32_layers
from pipeline.errors import CheckFailed, ConfigError

from .conftest import NUM_CLASSES, TASKS


@pytest.fixture(scope="module")
def int8_path(setup, tmp_path_factory):
    return quantize_int8(setup.fp32, tmp_path_factory.mktemp("g") / "int8.onnx", setup.calib).path


def _break_scale(src, dst, factor=-4.0):
    """Multiply the weight scale of the first int8 seg classifier by `factor`, as a corrupted edit would."""
    model = onnx.load(str(src))
    inits = {t.name: t for t in model.graph.initializer}
    dq = next(
        n
        for n in model.graph.node
        if n.op_type == "DequantizeLinear"
        and "seg" in n.input[0]
        and "classifier.weight" in n.input[0]
        and inits[n.input[0]].data_type == onnx.TensorProto.INT8
    )
    init = inits[dq.input[1]]
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(factor), init.name))
    onnx.save(model, str(dst))
    return dst


def test_gate_passes_on_the_real_int8_model(setup, int8_path):
    result = run_task_gate(setup.fp32, int8_path, setup.images, setup.targets, TASKS, NUM_CLASSES)
    assert result.passed, result.message()
    assert {(c.task, c.name) for c in result.checks} == {
        ("seg", "argmax_agreement_pct"),
        ("seg", "miou_drop"),
        ("depth", "abs_err_increase_m"),
        ("normal", "mean_angle_increase_deg"),
    }
    assert result.worst_ratio < 1
    assert set(result.to_dict()["parity"]) == set(TASKS)
    result.raise_if_failed()


def test_gate_fails_with_a_broken_scale(setup, int8_path, tmp_path):
    broken = _break_scale(int8_path, tmp_path / "broken.onnx")
    result = run_task_gate(setup.fp32, broken, setup.images, setup.targets, TASKS, NUM_CLASSES)
    assert not result.passed and result.worst_ratio > 1
    with pytest.raises(CheckFailed) as e:
        result.raise_if_failed("report.json")
    msg = str(e.value)
    assert e.value.exit_code == 3 and "\n" not in msg
    first = result.failures[0]
    assert f"{first.task} {first.name} = " in msg and "limit" in msg


def test_check_directions_and_ratio():
    assert GateCheck("seg", "a", 96.0, 95.0, "min").passed
    assert not GateCheck("seg", "a", 94.0, 95.0, "min").passed
    assert GateCheck("seg", "a", 97.5, 95.0, "min").ratio == pytest.approx(0.5)
    assert not GateCheck("depth", "d", 0.03, 0.02, "max").passed
    assert not GateCheck("depth", "d", float("nan"), 0.02, "max").passed
    assert GateCheck("depth", "d", -0.01, 0.02, "max").ratio == 0  # int8 better than fp32


def test_gate_on_arrays_names_the_failing_head():
    rng = np.random.default_rng(0)
    seg = rng.normal(size=(2, 3, 4, 4)).astype(np.float32)
    depth = rng.uniform(1, 2, size=(2, 1, 4, 4)).astype(np.float32)
    fp32 = {"seg": seg, "depth": depth}
    int8 = {"seg": seg, "depth": depth + 0.05}
    targets = {"seg": seg.argmax(1), "depth": depth}
    result = task_gate(fp32, int8, targets, ["seg", "depth"], 3)
    assert [(c.task, c.name) for c in result.failures] == [("depth", "abs_err_increase_m")]
    assert "depth abs_err_increase_m = 0.05" in result.message()
    loose = task_gate(
        fp32, int8, targets, ["seg", "depth"], 3, GateTolerances(depth_abs_err_increase_max_m=0.1)
    )
    assert loose.passed


def test_tolerances_from_mapping():
    assert GateTolerances.from_mapping({"seg_agreement_min_pct": 90}).seg_agreement_min_pct == 90.0
    with pytest.raises(ConfigError, match="unknown keys"):
        GateTolerances.from_mapping({"seg_agreement": 90})


def _is_int8(model_path, conv_name: str) -> bool:
    model = onnx.load(str(model_path))
    producers = {o: n for n in model.graph.node for o in n.output}
    conv = next(n for n in model.graph.node if n.name == conv_name)
    dq = producers.get(conv.input[1])
    return dq is not None and dq.op_type == "DequantizeLinear"


def test_search_leaves_the_sensitive_layer_in_fp32(setup, tmp_path):
    """A judge that fails while one chosen Conv is int8: the search must leave exactly that layer in fp32."""
    convs = conv_nodes(setup.fp32)
    target = convs[-2]
    real = gate_judge(setup.fp32, setup.calib[:4], {}, [], NUM_CLASSES)  # no tasks: nothing to fail

    class Verdict:
        def __init__(self, passed: bool, ratio: float):
            self.passed, self.worst_ratio = passed, ratio

    def judge(path):
        assert real(path).passed  # the real fp32-vs-int8 wiring runs on every trial
        bad = _is_int8(path, target)
        return Verdict(not bad, 2.0 if bad else 0.5)

    result = search_fp32_layers(
        setup.fp32, tmp_path / "s.onnx", setup.calib[:4], judge, candidates=convs[-3:], max_exclude=2
    )
    assert result.passed and result.excluded == [target]
    assert result.sensitivity == {convs[-3]: 2.0, target: 0.5, convs[-1]: 2.0}
    assert len(result.trials) == 1 + 3
    assert (tmp_path / "s.onnx").is_file() and result.info.fp32_convs == 1
    assert not _is_int8(tmp_path / "s.onnx", target) and _is_int8(tmp_path / "s.onnx", convs[-1])


def test_search_keeps_everything_int8_when_the_gate_passes(setup, tmp_path):
    result = search_fp32_layers(
        setup.fp32, tmp_path / "s.onnx", setup.calib[:4], lambda p: GateResult([], {}), max_exclude=2
    )
    assert result.passed and result.excluded == [] and len(result.trials) == 1
