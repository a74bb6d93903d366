"""Static weight checks: N:M counting, zero-pattern survival through export and simplification, pairing,
corruption detection, and compressed size."""

from __future__ import annotations

import gzip

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from exporters.checks import (
    compress_artifact,
    conv_weights_from_onnx,
    conv_weights_from_torch,
    match_zero_patterns,
    nm_report,
    nm_violations,
)
from exporters.pairing import name_tokens
from exporters.simplify import simplify_onnx
from pipeline.errors import PipelineError

# ---------------------------------------------------------------------------------------------------------
# nm_violations on hand-built tensors


def test_nm_violations_1x4():
    assert nm_violations(np.array([[1.0, 0.0, 2.0, 0.0]])) == 0
    assert nm_violations(np.array([[0.0, 0.0, 0.0, 0.0]])) == 0
    assert nm_violations(np.array([[1.0, 2.0, 3.0, 0.0]])) == 1
    assert nm_violations(np.array([[1.0, 2.0, 3.0, 4.0]])) == 1
    assert nm_violations(np.array([[1.0, np.nan, 0.0, 0.0]])) == 0
    assert nm_violations(np.array([[1.0, np.nan, 3.0, 0.0]])) == 1  # NaN is not a zero


def test_nm_violations_2x8():
    w = np.array(
        [
            [1, 1, 0, 0, 1, 1, 1, 0],  # groups: ok, violation
            [1, 1, 1, 1, 0, 0, 0, 1],  # groups: violation, ok
        ],
        dtype=np.float32,
    )
    assert nm_violations(w) == 2
    assert nm_violations(w, n=3, m=4) == 1  # only the all-nonzero group exceeds 3
    assert nm_violations(w.T, axis=0) == 2


def test_nm_violations_conv_axis():
    w = np.zeros((2, 8, 3, 3), dtype=np.float32)
    w[0, 0:3, 1, 1] = 1.0  # 3 nonzeros in one group of input channels at one kernel position
    w[1, 4:6, :, :] = 1.0  # 2 per group everywhere: fine
    assert nm_violations(w) == 1
    # grouping along the flattened C*R*S axis is a different (wrong) check: channel 4's 9 taps are adjacent
    assert nm_violations(w.reshape(2, -1)) > 1


def test_nm_violations_rejects_indivisible_channels():
    with pytest.raises(ValueError, match="not a multiple of 4"):
        nm_violations(np.ones((16, 3, 3, 3)))
    report = nm_report({"first": np.ones((16, 3, 3, 3)), "ok": np.zeros((8, 16, 1, 1))})
    assert report["first"]["eligible"] is False and report["first"]["violations"] is None
    assert report["ok"] == {"shape": [8, 16, 1, 1], "sparsity": 1.0, "eligible": True, "violations": 0}


# ---------------------------------------------------------------------------------------------------------
# zero pattern through export and simplification


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_zero_pattern_survives_export_and_simplify(exported, tmp_path, exporter, pattern):
    path, net, _ = exported(exporter, pattern)
    torch_w = conv_weights_from_torch(net)
    assert len(torch_w) == 8
    for tool in ("none", "onnxsim", "onnxslim"):
        out = tmp_path / f"{tool}.onnx"
        simplify_onnx(path, out, tool)
        onnx_w = conv_weights_from_onnx(out)
        report = match_zero_patterns(onnx_w, torch_w)
        assert report.passed, (tool, report.to_dict())
        assert {p.paired_by for p in report.pairs} == {"name"}
        if pattern == "2:4":
            nm = nm_report(onnx_w)
            assert [v["violations"] for v in nm.values() if v["eligible"]] == [0] * 7, (tool, nm)
        else:
            assert sum(p.zeros_onnx for p in report.pairs) >= 0.89 * sum(w.size for w in onnx_w.values())


def test_bn_folding_changed_values_but_not_zeros(exported):
    path, net, _ = exported("torchscript", "unstructured")
    torch_w = conv_weights_from_torch(net)
    onnx_w = conv_weights_from_onnx(path)
    folded = onnx_w["/model/backbone/backbone.0/Conv"]
    assert not np.allclose(folded, torch_w["backbone.0.weight"])
    np.testing.assert_array_equal(folded == 0, torch_w["backbone.0.weight"] == 0)


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_corrupted_weight_is_caught(exported, tmp_path, exporter):
    path, net, _ = exported(exporter, "unstructured")
    model = onnx.load(str(path))
    conv_inputs = [n.input[1] for n in model.graph.node if n.op_type == "Conv"]
    init = next(i for i in model.graph.initializer if i.name == conv_inputs[2])
    w = numpy_helper.to_array(init).copy()
    w.flat[int(np.flatnonzero(w == 0)[0])] = 0.5
    init.CopyFrom(numpy_helper.from_array(w, init.name))

    report = match_zero_patterns(conv_weights_from_onnx(model), conv_weights_from_torch(net))
    assert not report and not report.passed
    bad = [p for p in report.pairs if not p.mask_equal]
    assert len(bad) == 1 and bad[0].zeros_lost == 1 and bad[0].zeros_gained == 0
    assert bad[0].torch_name == "heads.seg.0.weight"
    assert report.to_dict()["mismatched"] == [bad[0].onnx_name]


def test_pairing_without_names_falls_back_to_masks(exported):
    path, net, _ = exported("torchscript", "unstructured")
    onnx_w = conv_weights_from_onnx(path)
    anonymous = {f"w{i}": onnx_w[k] for i, k in enumerate(reversed(list(onnx_w)))}  # no names, reversed order
    report = match_zero_patterns(anonymous, conv_weights_from_torch(net))
    assert report.passed and {p.paired_by for p in report.pairs} == {"mask"}

    # a corrupted anonymous weight still finds its true partner (nearest mask) and is reported
    victim = next(k for k, w in anonymous.items() if w.shape == (16, 32, 3, 3))
    anonymous[victim] = anonymous[victim].copy()
    anonymous[victim].flat[int(np.flatnonzero(anonymous[victim] == 0)[0])] = 1.0
    report = match_zero_patterns(anonymous, conv_weights_from_torch(net))
    bad = [p for p in report.pairs if not p.mask_equal]
    assert len(bad) == 1 and bad[0].paired_by == "nearest" and bad[0].zeros_lost == 1


def test_unmatched_weights_fail(exported):
    path, net, _ = exported("dynamo", "unstructured")
    torch_w = conv_weights_from_torch(net)
    onnx_w = conv_weights_from_onnx(path)
    del torch_w["heads.depth.3.weight"]
    report = match_zero_patterns(onnx_w, torch_w)
    assert not report.passed and report.unmatched_onnx == ["model.heads.depth.3.weight"]


def test_name_tokens():
    assert name_tokens("/model/backbone/layer1/layer1.0/conv1/Conv") == [
        "model",
        "backbone",
        "layer1",
        "0",
        "conv1",
    ]
    assert name_tokens("/model/seg/seg.0/Conv") == ["model", "seg", "0"]
    assert name_tokens("model.heads.seg.0.weight") == ["model", "heads", "seg", "0"]


def test_weights_through_identity_constant_and_sparse_initializer():
    w_init = np.arange(16, dtype=np.float32).reshape(4, 4, 1, 1)
    w_const = -w_init
    w_sparse = np.zeros((4, 4, 1, 1), np.float32)
    w_sparse[1, 2, 0, 0] = 7.0
    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(np.array([7.0], np.float32), "ws"),
        numpy_helper.from_array(np.array([6])),
        [4, 4, 1, 1],
    )
    nodes = [
        helper.make_node("Identity", ["w_init"], ["w_id"], name="id"),
        helper.make_node("Constant", [], ["w_c"], name="const", value=numpy_helper.from_array(w_const, "wc")),
        helper.make_node("Conv", ["x", "w_id"], ["y1"], name="conv_a"),
        helper.make_node("Conv", ["y1", "w_c"], ["y2"], name="conv_b"),
        helper.make_node("Conv", ["y2", "ws"], ["y"], name="conv_c"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 2, 2])],
        initializer=[numpy_helper.from_array(w_init, "w_init")],
        sparse_initializer=[sparse],
    )
    weights = conv_weights_from_onnx(helper.make_model(graph))
    assert list(weights) == ["conv_a", "conv_b", "conv_c"]
    np.testing.assert_array_equal(weights["conv_a"], w_init)
    np.testing.assert_array_equal(weights["conv_b"], w_const)
    np.testing.assert_array_equal(weights["conv_c"], w_sparse)


# ---------------------------------------------------------------------------------------------------------
# compression


def test_compressed_sparse_model_is_small_and_deterministic(exported):
    path, _, _ = exported("torchscript", "unstructured")
    gz_path, raw, packed = compress_artifact(path)
    assert gz_path.name == path.name + ".gz" and raw == path.stat().st_size
    assert packed < 0.2 * raw, (packed, raw)
    assert gzip.decompress(gz_path.read_bytes()) == path.read_bytes()
    first = gz_path.read_bytes()
    compress_artifact(path)
    assert gz_path.read_bytes() == first  # mtime fixed: same input, same archive


def test_unknown_codec(tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(PipelineError, match="Unknown codec 'lz4'. Available: gzip, zstd"):
        compress_artifact(tmp_path / "f", codec="lz4")
