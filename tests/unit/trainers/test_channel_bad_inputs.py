"""Channel-pruning bad inputs (docs/bad_inputs.md): one `error:` line, exit 1, no traceback."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from pipeline.cli import main

FAST = ["--config", "tiny", "--no-progress", "--set", "dense_reference=null", "--steps", "2"]


@pytest.mark.parametrize(
    "sets, needles",
    [
        (["sparsity.method=l1_uniform"], ["sparsity.method=l1_uniform prunes whole channels",
                                          "set sparsity.structure=channel"]),
        (["sparsity.structure=channel", "sparsity.method=gmp_global"],
         ["sparsity.method=gmp_global has no channel implementation", "l1_global"]),
        (["sparsity.structure=channel", "sparsity.target=0.999"],
         ["sparsity.target=0.999 is more of this model's MACs than channel pruning can remove", "at most 0.99"]),
    ],
    ids=["channel-method-unstructured", "unstructured-method-channel", "target-beyond-one-channel-per-group"],
)
def test_channel_bad_inputs_are_one_line(sets, needles, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["train", *FAST, "--run-dir", str(tmp_path / "r")]
    for s in sets:
        args += ["--set", s]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"
