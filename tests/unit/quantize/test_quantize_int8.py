"""QDQ int8 quantization: sparse pattern survival on the int8 initializers, exclusion, and bad input."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from exporters.checks import conv_weights_from_onnx
from exporters.quantize import (
    QuantizeConfig,
    calibration_images,
    check_int8_weights,
    conv_nodes,
    int8_conv_weights,
    quantize_int8,
)
from pipeline.errors import CheckFailed, ConfigError, MissingArtifactError, PipelineError


@pytest.fixture(scope="module")
def quantized(setup, tmp_path_factory):
    out = tmp_path_factory.mktemp("q") / "int8.onnx"
    return quantize_int8(setup.fp32, out, setup.calib, method="minmax")


def test_int8_weights_keep_every_zero_and_the_2_4_groups(setup, quantized):
    fp32 = conv_weights_from_onnx(setup.fp32)
    int8 = int8_conv_weights(quantized.path)
    assert len(int8) == len(fp32) == quantized.int8_convs
    for key, q in int8.items():
        assert q.dtype == np.int8
        assert np.all(q[fp32[key] == 0] == 0), key
    eligible = [v for v in quantized.weights.layers.values() if v["nm_fp32"] is not None]
    assert eligible and all(v["nm_fp32"] == 0 and v["nm_int8"] == 0 for v in eligible)
    assert all(v["sparsity_int8"] >= 0.5 for v in eligible)
    assert quantized.weights.passed


def test_weights_are_symmetric_per_channel(quantized):
    model = onnx.load(str(quantized.path))
    zero_points = [
        numpy_helper.to_array(t)
        for t in model.graph.initializer
        if t.name.endswith("_zero_point") and t.data_type == onnx.TensorProto.INT8 and t.dims
    ]
    assert zero_points and all(np.all(z == 0) for z in zero_points)


def test_check_int8_weights_reports_a_lost_zero_and_a_broken_group():
    fp32 = {"w": np.array([[[[0.0]], [[1.0]], [[0.0]], [[2.0]]]], dtype=np.float32)}  # [1, 4, 1, 1]: 2:4 ok
    ok = check_int8_weights(fp32, {"w": np.array([[[[0]], [[5]], [[0]], [[0]]]], dtype=np.int8)})
    assert ok.passed and ok.layers["w"]["added_zeros"] == 1
    bad = check_int8_weights(fp32, {"w": np.array([[[[3]], [[5]], [[0]], [[9]]]], dtype=np.int8)})
    assert not bad.passed and bad.layers["w"]["lost_zeros"] == 1 and bad.layers["w"]["nm_int8"] == 1
    assert "1 zeros lost" in bad.summary()
    assert not check_int8_weights(fp32, {"other": fp32["w"].astype(np.int8)}).passed


def test_excluded_layer_stays_fp32(setup, tmp_path):
    last = conv_nodes(setup.fp32)[-1]
    info = quantize_int8(setup.fp32, tmp_path / "x.onnx", setup.calib[:4], exclude=[last])
    assert info.excluded == [last] and info.fp32_convs == 1
    assert len(int8_conv_weights(info.path)) == len(conv_nodes(setup.fp32)) - 1


@pytest.mark.parametrize("count", [0, -1, 17])
def test_bad_calibration_count(setup, count):
    with pytest.raises(ConfigError) as e:
        calibration_images(setup.calib, count)
    assert "calibration_samples" in str(e.value) and "\n" not in str(e.value)


def test_calibration_images_cut(setup):
    cut = calibration_images(setup.calib, 3)
    assert cut.shape == (3, *setup.calib.shape[1:]) and cut.dtype == np.float32


def test_unknown_method_and_activation_type(setup, tmp_path):
    with pytest.raises(ConfigError, match="calibration_method 'kl'.*minmax, entropy, percentile"):
        quantize_int8(setup.fp32, tmp_path / "x.onnx", setup.calib, method="kl")
    with pytest.raises(ConfigError, match="activation_type"):
        quantize_int8(setup.fp32, tmp_path / "x.onnx", setup.calib, activation_type="int4")
    assert not (tmp_path / "x.onnx").exists()


def test_unknown_exclude_and_missing_model(setup, tmp_path):
    with pytest.raises(ConfigError, match="no Conv node: nope"):
        quantize_int8(setup.fp32, tmp_path / "x.onnx", setup.calib, exclude=["nope"])
    with pytest.raises(MissingArtifactError, match="pipeline export"):
        quantize_int8(tmp_path / "missing.onnx", tmp_path / "x.onnx", setup.calib)


def test_errors_are_pipeline_errors():
    assert issubclass(ConfigError, PipelineError) and CheckFailed.exit_code == 3


def test_config_proposal_defaults_are_valid():
    from exporters.quantize import CALIBRATION_METHODS, validate_settings

    cfg = QuantizeConfig()
    assert cfg.mode == "none" and cfg.calibration_method in CALIBRATION_METHODS
    validate_settings(cfg.calibration_method, cfg.activation_type)


def test_a_too_narrow_activation_range_is_one_line_with_the_fix(setup, tmp_path, monkeypatch):
    import exporters.quantize as q

    def narrow(*a, **k):
        raise ValueError("Too many bins for data range. Cannot create 2048 finite-sized bins.")

    monkeypatch.setattr(q, "quantize_static", narrow)
    with pytest.raises(ConfigError, match="calibration_method=minmax") as exc:
        q.quantize_int8(setup.fp32, tmp_path / "int8.onnx", setup.calib[:4], method="percentile")
    assert "\n" not in str(exc.value) and not (tmp_path / "int8.onnx").exists()
