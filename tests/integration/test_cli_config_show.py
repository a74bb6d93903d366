"""`check-config` takes --config like every other command (positional kept); `show` prints key numbers."""

from __future__ import annotations

from click.testing import CliRunner

from pipeline.cli import main


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_check_config_accepts_option_and_positional():
    for args in (["--config", "tiny"], ["tiny"]):
        result = invoke("check-config", *args, "--set", "sparsity.target=0.95")
        assert result.exit_code == 0, result.output
        assert "target: 0.95" in result.output and "config OK" in result.output
    result = invoke("check-config", "tiny", "--config", "demo")
    assert result.exit_code == 2 and "two configs given" in result.output


def test_check_config_help_example_exists():
    out = invoke("check-config", "--help").output
    assert "configs/example.yaml" not in out and "--config tiny" in out


def test_show_prints_key_numbers(tiny_run):
    result = invoke("show", "--run-dir", tiny_run.run)
    assert result.exit_code == 0, result.output
    for word in ("sparsity   overall", "delta_t", "parity     ONNX Runtime vs PyTorch passed", "size       export/model.onnx"):
        assert word in result.output, result.output
