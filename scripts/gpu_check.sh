#!/usr/bin/env bash
# Every GPU-side check in one call, for a machine with CUDA (TensorRT and onnxruntime-gpu optional):
#   1. pytest's tests marked `gpu` or `tensorrt` (pyproject.toml markers; "no tests collected" is not an error);
#   2. scripts/gpu_check.py: a short demo-model 2:4 run, dense/sparse TensorRT engines, PyTorch CUDA and ORT GPU
#      latency.
# Missing pieces are printed as skipped with the reason and do not fail the script; pass --require-tensorrt
# to make a missing TensorRT an error. Extra arguments go to gpu_check.py (see --help).
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
status=0
"$PY" -m pytest -q tests -m "gpu or tensorrt"
rc=$?
if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ]; then status=$rc; fi
"$PY" scripts/gpu_check.py "$@"
rc=$?
if [ "$rc" -ne 0 ]; then status=$rc; fi
exit "$status"
