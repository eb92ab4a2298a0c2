# Two commands from a fresh clone: `make run` and `make test`. Each creates the
# virtual environment on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Directory of pre-built wheels; where it holds a CPU build of torch (as on the
# project's CI machines) that build is installed first, so pip never downloads
# a multi-GB CUDA build there. Elsewhere torch resolves from the index as usual.
LOCAL_WHEELS ?= $(or $(PIP_FIND_LINKS),/opt/wheels)
SCALE ?= small
PYTEST_ARGS ?=
# `make publish SUITE=l2s`: the published run of a suite, three seeds, into results/<suite>-<scale>/
# (resumed: cells already there are kept).
SUITE ?= sparse
SEEDS ?= 0,1,2

# The example plugin package (docs/plugins.md), installed apart from the project's venv (pip --target)
# so that the project's own tests see the built-in plugins only; its tests see it through its entry point.
EXAMPLE := examples/l2obench-example-solver
EXAMPLE_SITE := $(VENV)/example-site

.PHONY: setup run publish test test-example test-all bench asv clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@if ls $(LOCAL_WHEELS)/torch-*+cpu-*.whl >/dev/null 2>&1; then \
		echo "installing the local CPU build of torch from $(LOCAL_WHEELS)"; \
		$(BIN)/pip install -q --no-index --no-deps --find-links $(LOCAL_WHEELS) torch; \
	fi
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

run: setup
	$(BIN)/l2obench run --suite sparse --scale $(SCALE) --resume

publish: setup
	$(BIN)/l2obench run --suite $(SUITE) --scale $(SCALE) --seeds $(SEEDS) --results results/$(SUITE)-$(SCALE) --resume
	$(BIN)/l2obench report results/$(SUITE)-$(SCALE) -o results/$(SUITE)-$(SCALE)/report

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-example

# Install the example package as a user would (a plain pip install) and run its own tests, which include
# a run of the smoke suite with its solvers.
test-example: setup
	rm -rf $(EXAMPLE_SITE)
	$(BIN)/pip install -q --no-deps --no-build-isolation --target $(EXAMPLE_SITE) ./$(EXAMPLE)
	cd $(EXAMPLE) && PYTHONPATH=$(abspath $(EXAMPLE_SITE)) $(abspath $(BIN))/python -m pytest -q -p no:cacheprovider

test-all: setup
	$(BIN)/python -m pytest -q -m "" $(PYTEST_ARGS)

bench: setup
	$(BIN)/python benchmarks/fista_vs_sklearn.py

asv: setup
	$(BIN)/asv machine --yes >/dev/null && $(BIN)/asv run --python=same --quick --show-stderr

clean:
	rm -rf $(VENV) .asv .pytest_cache
