"""Channel-pruning bad inputs (docs/bad_inputs.md): one `error:` line, exit 1, no traceback."""

from __future__ import annotations

import pytest

from tests.helpers import cli_fails_in_one_line

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
    cli_fails_in_one_line(args, *needles)
