"""The `pipeline` console script: a one-line error when no ONNX Runtime is installed, then the CLI.

The base install depends on neither ONNX Runtime build (the `cpu` and `gpu` extras pick one), and the CLI's
modules import onnxruntime at their top, so without this check a bare `pip install .` would end in an
ImportError traceback.
"""

from __future__ import annotations

import importlib.util
import sys

MISSING_RUNTIME = (
    "error: no ONNX Runtime is installed; install the project with one runtime extra: "
    "pip install '.[cpu]' (CPU) or pip install '.[gpu]' (CUDA/TensorRT), never both"
)


def main() -> None:
    if importlib.util.find_spec("onnxruntime") is None:
        print(MISSING_RUNTIME, file=sys.stderr)
        sys.exit(1)
    from pipeline.cli import main as cli_main  # only after the check: importing the CLI needs onnxruntime

    cli_main()
