# Two entry points: `make demo` (set up + run the whole pipeline on the built-in data)
# and `make test` (set up + run the test suite). Both are idempotent.
PYTHON ?= python3.11
VENV   ?= .venv
BIN     = $(VENV)/bin
# CPU machines take the pinned CPU wheel; a GPU machine keeps the torch it already has.
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup demo test bench bench-quick clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q --disable-pip-version-check "$(TORCH_SPEC)"
	$(BIN)/pip install -q --disable-pip-version-check -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

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
