"""`sparsity.structure`: unstructured (default) or channel; channel pruning refuses a 2:4 harden pattern in one line."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.config import load_config
from pipeline.errors import ConfigError


def test_structure_defaults_to_unstructured_and_accepts_channel() -> None:
    assert load_config("tiny").sparsity.structure == "unstructured"
    assert load_config("tiny", ["sparsity.structure=channel"]).sparsity.structure == "channel"
    with pytest.raises(ConfigError, match="structure"):
        load_config("tiny", ["sparsity.structure=filters"])


def test_an_unset_target_follows_the_structure_and_an_explicit_one_wins(tmp_path) -> None:
    # the presets leave the target unset: 0.9 of the weights, or 0.5 of the MACs for channel pruning
    assert load_config("demo").sparsity.target == 0.9
    assert load_config("demo", ["sparsity.structure=channel"]).sparsity.target == 0.5
    assert load_config("demo", ["sparsity.structure=channel", "sparsity.target=0.7"]).sparsity.target == 0.7
    own = tmp_path / "own.yaml"
    own.write_text("extends: demo\nsparsity: {structure: channel, target: 0.3}\n")
    assert load_config(str(own)).sparsity.target == 0.3
    own.write_text("extends: demo\nsparsity: {structure: channel}\n")
    assert load_config(str(own)).sparsity.target == 0.5


@pytest.mark.parametrize("pattern", ["2:4", "adaptive-2:4"])
def test_channel_structure_with_a_two_four_pattern_is_one_line_saying_what_is_supported(pattern: str) -> None:
    r = CliRunner().invoke(main, ["check-config", "tiny", "--set", "sparsity.structure=channel",
                                  "--set", f"harden.pattern={pattern}"])
    assert r.exit_code == 1, r.output
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in r.output
    assert lines[0] == (
        f"error: 'sparsity.structure' = channel with 'harden.pattern' = {pattern}: channel pruning exports "
        "dense-shaped smaller convs; 2:4 and adaptive-2:4 apply to unstructured only -- set "
        "harden.pattern=unstructured or sparsity.structure=unstructured"
    )
    assert load_config("tiny", ["sparsity.structure=channel"]).harden.pattern == "unstructured"
