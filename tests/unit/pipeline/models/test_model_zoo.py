"""Every registered model: output contract, spec round trip, conv-weight counts."""

from __future__ import annotations

import json

import pytest
import torch

from pipeline.errors import ConfigError
from pipeline.models import MultiTaskNet, create_model, list_models, task_channels

TASKS = {"seg": 7, "depth": 1, "normal": 3}
# Paper-scale models get narrow heads so the suite stays fast; the backbone is unchanged.
SMALL = {
    "tiny_mtl": {},
    "scene_aspp": {},
    "deeplab_resnet18": {"head_width": 32},
    "deeplab_resnet34": {"head_width": 32},
    "mobilenetv2_aspp": {"head_width": 32},
}

# One torchvision-style key per backbone family, seen from the whole model, plus a head classifier.
EXPECTED_KEYS = {
    "tiny_mtl": "backbone.layer3.0.downsample.0.weight",
    "scene_aspp": "backbone.layer4.0.bn2.running_mean",
    "deeplab_resnet18": "backbone.layer4.0.downsample.0.weight",
    "deeplab_resnet34": "backbone.layer4.0.downsample.0.weight",
    "mobilenetv2_aspp": "backbone.features.0.0.weight",
}


def conv_weights(module: torch.nn.Module, prefix: str = "") -> int:
    return sum(p.numel() for n, p in module.named_parameters() if p.dim() == 4 and n.startswith(prefix))


def test_registry_lists_every_model() -> None:
    assert set(SMALL) <= set(list_models())
    assert list_models() == sorted(list_models())


@pytest.mark.parametrize("name", sorted(SMALL))
def test_output_contract(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, TASKS, **SMALL[name]).eval()
    state = model.state_dict()
    assert EXPECTED_KEYS[name] in state and "heads.normal.branches.1.classifier.weight" in state
    (image,) = model.example_inputs(batch=2, height=64, width=64)
    with torch.no_grad():
        out = model(image)
    assert list(out) == list(TASKS)  # output order = task order = ONNX output order
    assert out["seg"].shape == (2, 7, 64, 64)
    assert out["depth"].shape == (2, 1, 64, 64)
    assert out["normal"].shape == (2, 3, 64, 64)
    assert all(torch.isfinite(v).all() for v in out.values())
    assert (out["depth"] > 0).all()
    torch.testing.assert_close(out["normal"].norm(dim=1), torch.ones(2, 64, 64), atol=1e-5, rtol=0)


def test_subset_of_tasks_and_odd_sizes() -> None:
    model = create_model("tiny_mtl", {"depth": 1}).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 30, 45))  # not a multiple of the output stride
    assert list(out) == ["depth"] and out["depth"].shape == (1, 1, 30, 45)


def test_depth_is_clamped_exp_and_normals_unit() -> None:
    model = create_model("tiny_mtl", {"depth": 1, "normal": 3}).eval()
    with torch.no_grad():
        for head in model.heads.values():
            for branch in head.branches:
                branch.classifier.weight.zero_()
                branch.classifier.bias.fill_(10.0)  # summed over 2 branches: z = 20, beyond the clamp
        out = model(torch.rand(1, 3, 32, 32))
    torch.testing.assert_close(out["depth"], torch.full((1, 1, 32, 32), float(torch.exp(torch.tensor(6.0)))))
    torch.testing.assert_close(out["normal"], torch.full((1, 3, 32, 32), 3**-0.5))


def test_spec_round_trip() -> None:
    model = create_model("tiny_mtl", TASKS, dilations=(1, 3), head_width=16)
    spec = model.spec
    assert spec == {"name": "tiny_mtl", "kwargs": {"tasks": TASKS, "dilations": [1, 3], "head_width": 16}}
    spec = json.loads(json.dumps(spec))  # what a checkpoint stores
    rebuilt = create_model(spec["name"], **spec["kwargs"])
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    model.eval(), rebuilt.eval()
    (image,) = model.example_inputs(height=32, width=32)
    with torch.no_grad():
        a, b = model(image), rebuilt(image)
    for task in TASKS:
        torch.testing.assert_close(a[task], b[task], rtol=0, atol=0)
    assert rebuilt.spec == spec
    assert create_model(**spec).spec == spec  # the form docs/architecture.md names


def test_create_model_errors() -> None:
    with pytest.raises(ConfigError, match=r"unknown model 'nope' \(available: .*tiny_mtl"):
        create_model("nope", TASKS)
    with pytest.raises(ConfigError, match="has no option.*'head_wdth'"):
        create_model("tiny_mtl", TASKS, head_wdth=8)
    with pytest.raises(ConfigError, match="unknown task 'edges'"):
        create_model("tiny_mtl", {"edges": 1})
    with pytest.raises(ConfigError, match="'normal' has 3 output"):
        create_model("tiny_mtl", {"normal": 1})
    with pytest.raises(ConfigError, match="needs tasks"):
        create_model("tiny_mtl")
    with pytest.raises(ConfigError, match="plain values"):
        create_model("tiny_mtl", TASKS, head_width=object())
    with pytest.raises(ConfigError, match="model 'scene_aspp': widths and blocks need four"):
        create_model("scene_aspp", TASKS, widths=[16, 32, 64])
    with pytest.raises(ConfigError, match="output_stride must be 8, 16 or 32"):
        create_model("mobilenetv2_aspp", TASKS, output_stride=4)
    with pytest.raises(ConfigError, match="unknown head"):
        create_model("scene_aspp", TASKS, head="fpn")


def test_task_channels() -> None:
    assert task_channels(["seg", "depth", "normal"], 13) == {"seg": 13, "depth": 1, "normal": 3}


def test_light_head_variant() -> None:
    model = create_model("scene_aspp", TASKS, head="light", head_width=32).eval()
    assert "heads.seg.classifier.weight" in model.state_dict()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 80))["seg"].shape == (1, 7, 64, 80)


def test_classifiers_are_the_last_convs() -> None:
    model = create_model("scene_aspp", TASKS)
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d) and n.startswith("heads.")]
    assert [n for n in names if n.endswith("classifier")] == [
        f"heads.{t}.branches.{i}.classifier" for t in TASKS for i in range(4)
    ]
    for n, m in model.named_modules():
        if n.endswith("classifier"):
            assert m.out_channels == TASKS[n.split(".")[1]]


def test_scene_aspp_split_matches_findings() -> None:
    """findings.md, second experiment: ~621k parameters, heads hold 80% of the conv weights."""
    model = create_model("scene_aspp", TASKS)
    backbone, heads = conv_weights(model, "backbone."), conv_weights(model, "heads.")
    assert (backbone, heads) == (123_056, 494_336)
    assert 0.79 < heads / (backbone + heads) < 0.81
    assert sum(p.numel() for p in model.parameters()) == 621_468


def test_tiny_mtl_channels_allow_2_4() -> None:
    """Every non-classifier conv except the RGB stem has in/out channels that are multiples of 16."""
    model = create_model("tiny_mtl", TASKS)
    ineligible = [
        n
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Conv2d)
        and not n.endswith("classifier")
        and (m.in_channels % 16 or m.out_channels % 16)
    ]
    assert ineligible == ["backbone.conv1"]


def test_multitasknet_rejects_unknown_head_names() -> None:
    with pytest.raises(ConfigError, match="unknown kind 'edges'"):
        MultiTaskNet(torch.nn.Identity(), {"edges": torch.nn.Identity()}, kinds={"edges": "edges"})
    with pytest.raises(ConfigError, match="must name the heads"):
        MultiTaskNet(torch.nn.Identity(), {"z": torch.nn.Identity()}, kinds={"depth": "depth"})
    unkinded = MultiTaskNet(torch.nn.Identity(), {"edges": torch.nn.Identity()})  # a name that is no kind
    with pytest.raises(ConfigError, match="head 'edges' has no task kind"):
        unkinded(torch.rand(1, 3, 4, 4))


def test_renamed_heads_transform_by_kind_and_rebuild_from_the_spec() -> None:
    kinds = {"z": "depth", "semantic": "seg", "z2": "depth"}
    model = create_model("tiny_mtl", task_channels(kinds, 5), kinds=kinds)
    assert model.spec["kwargs"]["kinds"] == kinds and list(model.heads) == ["z", "semantic", "z2"]
    out = model(*model.example_inputs(height=32, width=32))
    assert list(out) == ["z", "semantic", "z2"]
    assert out["semantic"].shape[1] == 5 and out["z"].shape[1] == out["z2"].shape[1] == 1
    assert (out["z"] > 0).all() and (out["semantic"] < 0).any()  # depth heads exp(), seg logits stay raw
    again = create_model(**model.spec)
    assert again.task_kinds == kinds
    plain = create_model("tiny_mtl", task_channels(["seg"], 5), kinds={"seg": "seg"})
    assert "kinds" not in plain.spec["kwargs"]  # names equal kinds: the spec every earlier run wrote
    with pytest.raises(ConfigError, match="task 'z' \\(depth\\) has 1 output"):
        create_model("tiny_mtl", {"z": 2}, kinds={"z": "depth"})
