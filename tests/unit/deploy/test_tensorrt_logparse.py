"""Parsing TensorRT's sparsity log lines and inspector JSON, and the eligible/picked vs hardened-2:4 report.

The canned log lines copy the format TensorRT prints (quoted in NVIDIA/TensorRT issues #4056 and #2169); the
parsers have not seen a log from a real build of this project's models.
"""

from __future__ import annotations

import json

from deploy.tensorrt_logs import parse_engine_layers, parse_sparsity_log, sparse_layer_report

CANNED_LOG = """\
[11/27/2026-10:00:00] [V] [TRT] Graph optimization time: 0.01 seconds.
[11/27/2026-10:00:01] [I] [TRT] (Sparsity) Layers eligible for sparse math: /layer3/layer3.0/conv1/Conv + /layer3/layer3.0/relu/Relu, /backbone/layer4/layer4.0/conv2/Conv, node_conv2d_7 + node_relu_7, /seg/aspp/aspp.1/Conv
[11/27/2026-10:00:05] [V] [TRT] Tactic: 0x0000 Time: 0.1
[11/27/2026-10:00:09] [I] [TRT] (Sparsity) TRT inference plan picked sparse implementation for layers: /backbone/layer4/layer4.0/conv2/Conv, node_conv2d_7 + node_relu_7
"""

HARDENED = [
    "backbone.layer3.0.conv1",
    "backbone.layer4.0.conv2",
    "heads.depth.aspp.2",
    "heads.seg.aspp.1",
    "backbone.layer1.0.conv1",
]


def test_parse_canned_verbose_log():
    out = parse_sparsity_log(CANNED_LOG.splitlines())
    assert out["eligible_logged"] and out["picked_logged"]
    assert out["eligible"] == [
        "/layer3/layer3.0/conv1/Conv + /layer3/layer3.0/relu/Relu",
        "/backbone/layer4/layer4.0/conv2/Conv",
        "node_conv2d_7 + node_relu_7",
        "/seg/aspp/aspp.1/Conv",
    ]
    assert out["picked"] == ["/backbone/layer4/layer4.0/conv2/Conv", "node_conv2d_7 + node_relu_7"]


def test_parse_empty_and_absent_lists():
    out = parse_sparsity_log(
        [
            "(Sparsity) Layers eligible for sparse math: Conv_22, MatMul_51",
            "(Sparsity) TRT inference plan picked sparse implementation for layers:",
        ]
    )
    assert out["eligible"] == ["Conv_22", "MatMul_51"] and out["picked"] == [] and out["picked_logged"]
    none = parse_sparsity_log(["[I] nothing about sparsity"])
    assert none == {"eligible": [], "picked": [], "eligible_logged": False, "picked_logged": False}


def test_sparse_layer_report_with_substring_and_node_map():
    log = parse_sparsity_log(CANNED_LOG.splitlines())
    rep = sparse_layer_report(
        log["eligible"], log["picked"], HARDENED, node_to_layer={"node_conv2d_7": "heads.depth.aspp.2"}
    )
    per = rep["per_layer"]
    assert per["backbone.layer3.0.conv1"] == {
        "eligible": True,
        "picked": False,
        "trt_layers": ["/layer3/layer3.0/conv1/Conv + /layer3/layer3.0/relu/Relu"],
    }
    assert per["backbone.layer4.0.conv2"]["picked"] is True
    assert per["heads.depth.aspp.2"]["eligible"] and per["heads.depth.aspp.2"]["picked"]  # via the node map
    assert per["heads.seg.aspp.1"]["eligible"] and not per["heads.seg.aspp.1"]["picked"]
    assert rep["hardened_not_eligible"] == ["backbone.layer1.0.conv1"]
    assert rep["eligible_not_picked"] == ["backbone.layer3.0.conv1", "heads.seg.aspp.1"]
    assert rep["hardened_eligible"] == 4 and rep["hardened_picked"] == 2
    assert rep["eligible_not_hardened"] == [] and rep["picked_not_hardened"] == []


def test_name_matching_respects_boundaries_and_ambiguity():
    rep = sparse_layer_report(["/backbone/conv10/Conv", "x_backbone_conv1_y"], [], ["backbone.conv1"])
    assert rep["per_layer"]["backbone.conv1"]["trt_layers"] == ["x_backbone_conv1_y"]
    assert rep["eligible_not_hardened"] == ["/backbone/conv10/Conv"]
    # "/seg/seg.0/Conv" -> scope "seg.0": a suffix of both heads below, so it is not attributed by name
    amb = sparse_layer_report(["/seg/seg.0/Conv"], [], ["heads.seg.0", "aux.seg.0"])
    assert amb["hardened_eligible"] == 0
    # the node map settles it
    mapped = sparse_layer_report(
        ["/seg/seg.0/Conv"],
        [],
        ["heads.seg.0", "aux.seg.0"],
        node_to_layer={"/seg/seg.0/Conv": "heads.seg.0"},
    )
    assert mapped["per_layer"]["heads.seg.0"]["eligible"] and not mapped["per_layer"]["aux.seg.0"]["eligible"]


def test_parse_engine_layers_detailed_and_names_only():
    detailed = json.dumps(
        {
            "Layers": [
                {
                    "Name": "/backbone/conv1/Conv",
                    "LayerType": "CaskConvolution",
                    "HasSparseWeights": 1,
                    "TacticName": "sm80_xmma_fprop_sparse_conv_interleaved_f16f16_f16f16_f16",
                },
                {
                    "Name": "/seg/Conv",
                    "ParameterType": "Convolution",
                    "HasSparseWeights": 0,
                    "TacticName": "sm80_xmma_fprop_implicit_gemm_f16f16",
                },
                {"Name": "Reformat", "LayerType": "Reformat"},
            ],
            "Bindings": ["image", "seg"],
        }
    )
    layers = parse_engine_layers(detailed)
    assert [(la["name"], la["has_sparse_weights"], la["sparse_tactic"]) for la in layers] == [
        ("/backbone/conv1/Conv", True, True),
        ("/seg/Conv", False, False),
        ("Reformat", None, None),
    ]
    assert layers[1]["type"] == "Convolution"
    names_only = parse_engine_layers(json.dumps({"Layers": ["a", "b"], "I/O Tensors": []}))
    assert [la["name"] for la in names_only] == ["a", "b"] and names_only[0]["tactic"] is None
