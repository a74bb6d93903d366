# Two entry points: `make demo` (set up + run the whole pipeline on the built-in data)
# and `make test` (set up + run the test suite). Both are idempotent.
PYTHON ?= python3.11
VENV   ?= .venv
BIN     = $(VENV)/bin
# The pinned torch (the CPU machine's mirror serves its +cpu build); override TORCH_SPEC for another build (docs/gpu.md).
TORCH_SPEC ?= torch==2.13.0
# Exactly one runtime extra per venv: `cpu` (onnxruntime) here; for a GPU venv see docs/gpu.md
# (make setup VENV=.venv-gpu EXTRAS=gpu,dev). onnxruntime and onnxruntime-gpu must never share a venv.
EXTRAS ?= cpu,dev

.PHONY: setup demo test bench bench-quick clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-$(EXTRAS): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q --disable-pip-version-check "$(TORCH_SPEC)"
	$(BIN)/pip install -q --disable-pip-version-check -e ".[$(EXTRAS)]"
	$(BIN)/python -c "$$ONE_RUNTIME"
	touch $@

# Fails the setup when both ONNX Runtime packages ended up in the venv (e.g. a cpu venv re-used for gpu).
define ONE_RUNTIME
import importlib.metadata as md, sys
names = {(d.metadata["Name"] or "").lower() for d in md.distributions()}
if {"onnxruntime", "onnxruntime-gpu"} <= names:
    sys.exit("error: onnxruntime and onnxruntime-gpu are both installed in $(VENV); they share one module. "
             "Use a fresh venv per runtime (docs/gpu.md)")
endef
export ONE_RUNTIME

setup: $(VENV)/.installed-$(EXTRAS)

demo: setup
	$(BIN)/pipeline run all

test: setup
	$(BIN)/python -m pytest -q

bench-quick: setup
	$(BIN)/python -m benchmarks.quality --quick

bench: setup
	$(BIN)/python -m benchmarks.quality

clean:
	rm -rf $(VENV) runs .pytest_cache
