"""Bring your own model and data: factory resolution, output and sample checks, rule coverage, dense_init files."""

from __future__ import annotations

import pytest
import torch

from examples.custom_model.model import build_model
from pipeline.config import load_config
from pipeline.data import build_dataset, dataset_fingerprint
from pipeline.errors import ConfigError, DataError, PipelineError
from pipeline.models.factory import build_factory_model, check_model_outputs, rebuild_model
from tests import byo_factories
from trainers.sparsity.components import assign_components
from trainers.training_run import dense_init_state

KW = {"outputs": {"seg": 5, "depth": 1, "normal": 3}, "width": 8}
CHANNELS = {"seg": 5, "depth": 1, "normal": 3}
EXAMPLE = "examples.custom_model.model:build_model"
RULES = [
    {"match": "decoders.*.1", "component": None},
    {"match": "encoder.*", "component": "encoder"},
    {"match": "decoders.{task}.*", "component": "{task}"},
]


def test_factory_model_is_built_checked_and_rebuilt_from_its_spec():
    model = build_factory_model(EXAMPLE, KW)
    assert model.spec == {"name": EXAMPLE, "factory": EXAMPLE, "kwargs": KW}
    check_model_outputs(model, CHANNELS, 32, 24)
    again = rebuild_model(model.spec)
    assert type(again) is type(model) and again.state_dict().keys() == model.state_dict().keys()


@pytest.mark.parametrize(
    "path, needle",
    [
        ("no_such_pkg_xyz.mod:f", "cannot import module 'no_such_pkg_xyz.mod'"),
        ("tests.byo_factories:missing", "has no attribute 'missing'"),
        ("tests.byo_factories:NOT_CALLABLE", "is a int, not a callable"),
        ("tests.byo_factories:not_a_module", "returned a str, not a torch nn.Module"),
        ("tests.byo_factories:raises", "raised RuntimeError: out of coffee"),
    ],
)
def test_bad_model_factories_are_one_line_config_errors(path, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")) as e:
        build_factory_model(path, KW)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "factory, needle",
    [
        ("returns_tuple", "must return a dict keyed by task"),
        ("lacks_depth", "(missing depth)"),
        ("extra_key", "(extra edges)"),
        ("half_resolution", "output 'seg' has shape (2, 5, 16, 12), expected (2, 5, 32, 24)"),
    ],
)
def test_model_outputs_that_do_not_match_the_tasks(factory, needle):
    model = getattr(byo_factories, factory)(**KW)
    with pytest.raises(ConfigError) as e:
        check_model_outputs(model, CHANNELS, 32, 24)
    assert needle in str(e.value)


def test_rules_expand_over_configured_tasks_and_report_what_matches_nothing():
    model = build_model(**KW)
    found = assign_components(model, RULES, ["seg", "depth", "normal"])
    assert {a.component for a in found} == {None, "encoder", "seg", "depth", "normal"}
    dense = {a.name: a.rule for a in found if a.component is None}
    assert dense == {"bridge.0": "no rule matched (dense)", **{f"decoders.{t}.1": "decoders.*.1 -> dense" for t in KW["outputs"]}}
    with pytest.raises(ConfigError, match=r"sparsity.rules\[1\] match 'backbone.\*' matches no conv layer"):
        assign_components(model, [RULES[1], {"match": "backbone.*", "component": "backbone"}], ["seg"])
    with pytest.raises(ConfigError, match="task 'seg' gets no prunable layer"):
        assign_components(model, [{"match": "decoders.seg.*", "component": None}, *RULES[1:]], ["seg", "depth"])


def _data_cfg(factory: str, *extra: str):
    return load_config("tiny", [f"data.factory={factory}", "data.height=32", "data.width=32", *extra]).data


def test_data_factory_builds_a_checked_dataset_with_a_fingerprint():
    cfg = _data_cfg("examples.custom_model.data:make_dataset")
    ds = build_dataset(cfg, "val", ["seg", "depth"])
    assert len(ds) == 16 and ds.num_classes == 5 and set(ds[0]) == {"image", "seg", "depth"}
    assert dataset_fingerprint(cfg).startswith("factory-")


@pytest.mark.parametrize(
    "factory, needle",
    [
        ("data_lacks_seg", "(missing seg)"),
        ("data_wrong_shape", "sample 'depth' is torch.float32 (32, 32), expected torch.float32 (1, 32, 32)"),
        ("data_wrong_dtype", "sample 'seg' is torch.int32"),
    ],
)
def test_bad_data_factory_samples(factory, needle):
    with pytest.raises(DataError) as e:
        build_dataset(_data_cfg(f"tests.byo_factories:{factory}"), "train", ["seg", "depth"])
    assert needle in str(e.value)


def test_data_size_must_match_the_samples():
    with pytest.raises(DataError, match="data.height x data.width must equal the sample size"):
        build_dataset(_data_cfg("examples.custom_model.data:make_dataset", "data.height=16"), "val", ["depth"])


def test_model_factory_config_rules():
    cfg = load_config("demo", [f"model.factory={EXAMPLE}"])
    assert cfg.model.factory == EXAMPLE
    with pytest.raises(ConfigError, match="mutually exclusive"):
        load_config("tiny", [f"model.factory={EXAMPLE}"])  # tiny names model tiny_mtl
    with pytest.raises(ConfigError, match="must look like 'package.module:callable'"):
        load_config("tiny", ["model.factory=not a path", "model.name=null"])


def test_dense_init_reads_plain_state_dicts_and_names_mismatches(tmp_path):
    model = build_model(**KW)
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    state = dense_init_state(tmp_path / "sd.pt")
    assert state.keys() == model.state_dict().keys()
    torch.save({"state_dict": model.state_dict()}, tmp_path / "wrapped.pt")
    assert dense_init_state(tmp_path / "wrapped.pt").keys() == state.keys()
    torch.save({"weights": [1, 2]}, tmp_path / "junk.pt")
    with pytest.raises(PipelineError, match="neither an mtl-compress train checkpoint nor a state_dict"):
        dense_init_state(tmp_path / "junk.pt")
