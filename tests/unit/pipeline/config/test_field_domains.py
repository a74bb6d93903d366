"""Every config field has a declared domain; the loader refuses each out-of-domain value with one line, and
random `--set` values never end in a traceback."""

from __future__ import annotations

import dataclasses
import json
import math
import random

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.config import RunConfig, load_config
from pipeline.errors import ConfigError

_TYPED_ONLY = (str, bool)  # strings, literals and booleans: the type (an allowed set) is the domain


def _fields(cls: type, prefix: str = ""):
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            yield from _fields(type(default), f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f, default


def _yaml(value) -> str:
    if isinstance(value, float) and math.isnan(value):
        return ".nan"
    return json.dumps(list(value) if isinstance(value, tuple) else value)


NUMERIC = [(path, f) for path, f, default in _fields(RunConfig)
           if isinstance(default, (int, float, tuple, list, dict)) and not isinstance(default, bool)
           and path not in ("tasks", "model.kwargs", "data.kwargs", "sparsity.rules")]


def test_every_numeric_or_container_field_declares_a_domain():
    missing = [path for path, f in NUMERIC if "domain" not in f.metadata]
    assert missing == []
    assert len(NUMERIC) > 40


@pytest.mark.parametrize("path, f", NUMERIC, ids=[p for p, _ in NUMERIC])
def test_an_out_of_domain_value_is_one_line_naming_the_field(path, f):
    bad = f.metadata["domain"].bad
    with pytest.raises(ConfigError) as e:
        load_config("tiny", [f"{path}={_yaml(bad)}"])
    assert e.value.problems == [e.value.problems[0]] and f"'{path}' = " in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


def test_the_default_of_every_field_is_in_its_domain():
    load_config("demo")  # the defaults (demo overrides few) pass every domain


VALUES = ["0", "-1", "1", "2", "1e30", ".nan", "-.inf", "[]", "{}", "[0,0]", "x", "null", "true", "2:4",
          "18446744073709551617", "0.5", "[1,2,3,4]", "{seg: 1}", "{default: -1}", "cuda:7", ""]


def test_random_set_values_never_end_in_a_traceback(tmp_path):
    """A seeded random walk over every field and a pool of awkward values: exit 0, 1 or 2, never a crash."""
    rng = random.Random(1234)
    paths = [p for p, _f, _d in _fields(RunConfig)]
    runner = CliRunner()
    for _ in range(150):
        sets = []
        for _ in range(rng.randint(1, 3)):
            sets += ["--set", f"{rng.choice(paths)}={rng.choice(VALUES)}"]
        r = runner.invoke(main, ["check-config", "tiny", *sets])
        assert r.exit_code in (0, 1, 2), (sets, r.output)
        assert r.exception is None or isinstance(r.exception, SystemExit), (sets, repr(r.exception))
        assert "Traceback" not in r.output
        if r.exit_code == 1:
            assert len([ln for ln in r.stderr.splitlines() if ln.strip()]) == 1, (sets, r.stderr)
