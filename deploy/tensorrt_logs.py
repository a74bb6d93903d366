"""Parse TensorRT's builder log and engine-inspector JSON, and pair them with the layers hardened to 2:4.

This is how a build shows whether the 2:4 sparsity survived into the engine: which layers TensorRT found eligible
for sparse math, which it picked a sparse tactic for, and which hardened layers it did neither for. Pure Python
(onnx only to read node names), unit-tested on the CPU machine.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import onnx

_ELIGIBLE_MARK = "(Sparsity) Layers eligible for sparse math:"
_PICKED_MARK = "(Sparsity) TRT inference plan picked sparse implementation for layers:"


def _split_layers(text: str) -> list[str]:
    return [s.strip() for s in text.split(", ") if s.strip()]


def parse_sparsity_log(lines: Iterable[str]) -> dict[str, Any]:
    """Extract the builder's two sparsity lines (any prefix such as "[I] [TRT] " allowed; last occurrence wins).

    Returns:
        {"eligible": [...], "picked": [...], "eligible_logged": bool, "picked_logged": bool}; entries are TensorRT
        layer names, fused ones joined with " + " as TensorRT prints them.
    """
    out: dict[str, Any] = {"eligible": [], "picked": [], "eligible_logged": False, "picked_logged": False}
    for line in lines:
        for mark, key in ((_ELIGIBLE_MARK, "eligible"), (_PICKED_MARK, "picked")):
            pos = line.find(mark)
            if pos >= 0:
                out[key] = _split_layers(line[pos + len(mark) :].strip())
                out[f"{key}_logged"] = True
    return out


def parse_engine_layers(info_json: str) -> list[dict[str, Any]]:
    """Per-layer name, type, tactic and sparsity hints from `get_engine_information(LayerInformationFormat.JSON)`.

    Handles DETAILED output (layers are objects with "Name", "LayerType", "TacticName", "HasSparseWeights") and
    LAYER_NAMES_ONLY output (layers are plain strings); the 10.x "Bindings" / 11.x "I/O Tensors" keys are ignored.
    """
    data = json.loads(info_json) if info_json else {}
    layers = data.get("Layers", []) if isinstance(data, dict) else []
    out = []
    for layer in layers:
        if isinstance(layer, str):
            out.append(
                {
                    "name": layer,
                    "type": None,
                    "tactic": None,
                    "has_sparse_weights": None,
                    "sparse_tactic": None,
                }
            )
            continue
        tactic = layer.get("TacticName")
        hsw = layer.get("HasSparseWeights")
        out.append(
            {
                "name": layer.get("Name"),
                "type": layer.get("LayerType") or layer.get("ParameterType"),
                "tactic": tactic,
                "has_sparse_weights": None if hsw is None else bool(int(hsw)),
                "sparse_tactic": None if tactic is None else ("sparse" in str(tactic).lower()),
            }
        )
    return out


def _scope_path(member: str) -> str | None:
    """Module path from a TorchScript-exporter node name: "/layer3/layer3.0/conv1/Conv" -> "layer3.0.conv1"."""
    if not member.startswith("/"):
        return None
    parts = [p for p in member.split("/") if p]
    if parts and re.fullmatch(r"[A-Z][A-Za-z0-9]*(_\d+)?", parts[-1]):  # trailing op name: Conv, Relu, Conv_1
        parts = parts[:-1]
    path: list[str] = []
    for p in parts:  # Sequential children repeat their parent: layer3 / layer3.0
        if path and p.startswith(path[-1] + "."):
            path[-1] = p
        else:
            path.append(p)
    return ".".join(path) or None


def _owners_by_name(member: str, layers: list[str]) -> set[str]:
    scope = _scope_path(member)
    if scope:
        hits = {la for la in layers if la == scope or la.endswith("." + scope)}
        if len(hits) == 1:
            return hits
    found = set()
    for la in layers:
        for v in dict.fromkeys([la, la.replace(".", "_"), la.replace(".", "/")]):
            if re.search(r"(?<![A-Za-z0-9])" + re.escape(v) + r"(?![A-Za-z0-9])", member):
                found.add(la)
    return found


def onnx_node_layer_map(onnx_path: str | Path) -> dict[str, str]:
    """ONNX Conv/Gemm/MatMul node name -> module name, from its weight initializer ("backbone.conv1.weight").

    The dynamo exporter names nodes "node_conv2d_3", which carries no module path; TensorRT names its layers after
    these node names, so this map is what lets `sparse_layer_report` attribute TensorRT layers to modules.
    """
    model = onnx.load(str(onnx_path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    out = {}
    for n in model.graph.node:
        if n.op_type in ("Conv", "Gemm", "MatMul") and len(n.input) > 1 and n.input[1] in inits and n.name:
            w = n.input[1]
            out[n.name] = w[: -len(".weight")] if w.endswith(".weight") else w
    return out


def sparse_layer_report(
    eligible: list[str],
    picked: list[str],
    hardened_2to4_layers: list[str],
    node_to_layer: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Compare TensorRT's eligible/picked sparse layers with the conv layers the harden stage made 2:4.

    A TensorRT entry (possibly fused, "A + B") is attributed to a hardened layer when one of its members is an ONNX
    node that `node_to_layer` maps to it (most reliable: build it with `onnx_node_layer_map`); otherwise by name:
    a TorchScript-exporter scope ("/layer3/layer3.0/conv1/Conv" -> "layer3.0.conv1") that is a dotted suffix of
    exactly one hardened layer, or the layer's name appearing in the member between non-alphanumeric boundaries
    ("backbone.conv1", "backbone_conv1", "backbone/conv1"). Dynamo-exporter names ("node_conv2d_3") carry no module
    path and match only through `node_to_layer`. "hardened_not_eligible" is the usual symptom of
    weights that are not constants, a wrong 2:4 axis or channel counts TensorRT rejects; "eligible_not_picked" is
    TensorRT finding the dense kernel faster (small C/K, peers.md §2.4).
    """
    node_to_layer = node_to_layer or {}

    def owners(entry: str) -> set[str]:
        found = set()
        for member in (m.strip() for m in entry.split(" + ")):
            mapped = node_to_layer.get(member)
            if mapped is None:  # TensorRT may decorate node names; fall back to containment
                for node, layer in node_to_layer.items():
                    if node and re.search(
                        r"(?<![A-Za-z0-9_])" + re.escape(node) + r"(?![A-Za-z0-9_])", member
                    ):
                        mapped = layer
                        break
            if mapped is not None:
                if mapped in hardened_2to4_layers:
                    found.add(mapped)
                continue
            found.update(_owners_by_name(member, hardened_2to4_layers))
        return found

    eligible_by = {e: owners(e) for e in eligible}
    picked_by = {p: owners(p) for p in picked}
    per_layer = {}
    for layer in hardened_2to4_layers:
        per_layer[layer] = {
            "eligible": any(layer in o for o in eligible_by.values()),
            "picked": any(layer in o for o in picked_by.values()),
            "trt_layers": sorted({e for e, o in eligible_by.items() if layer in o}),
        }
    return {
        "hardened_2to4": len(hardened_2to4_layers),
        "eligible": len(eligible),
        "picked": len(picked),
        "hardened_eligible": sum(v["eligible"] for v in per_layer.values()),
        "hardened_picked": sum(v["picked"] for v in per_layer.values()),
        "per_layer": per_layer,
        "hardened_not_eligible": [k for k, v in per_layer.items() if not v["eligible"]],
        "eligible_not_picked": [k for k, v in per_layer.items() if v["eligible"] and not v["picked"]],
        "eligible_not_hardened": [e for e, o in eligible_by.items() if not o],
        "picked_not_hardened": [p for p, o in picked_by.items() if not o],
    }
