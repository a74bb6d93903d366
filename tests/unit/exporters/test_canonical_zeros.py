"""Negative zeros in initializers become +0.0 (same computation, better compression)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from exporters.checks import canonicalize_zeros


def test_negative_zeros_become_positive_and_values_stay():
    w = np.array([[-0.0, 0.0, -1.5, 2.0]], dtype=np.float32)
    init = numpy_helper.from_array(w, "w")
    graph = helper.make_graph([helper.make_node("Identity", ["w"], ["y"])], "g", [],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])], [init])
    model = helper.make_model(graph)
    assert canonicalize_zeros(model) == 1
    out = numpy_helper.to_array(model.graph.initializer[0])
    assert not np.signbit(out[0, 0]) and out[0, 2] == -1.5 and out[0, 3] == 2.0
    assert canonicalize_zeros(model) == 0
