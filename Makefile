# Everything a user or CI runs. `make run` and `make test` work on a fresh checkout.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= telemetryd.toml

.PHONY: run test lint typecheck docs bench venv install install-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Re-install when the packaging changes (entry points for sinks live in pyproject.toml).
# The daemon is the `server` extra; plain `pip install telemetryd` is the client library.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[server]'
	touch $@

# The tests also install tests/plugin_example, a third-party sink package, as a user would.
$(VENV)/.installed-dev: pyproject.toml tests/plugin_example/pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet -e tests/plugin_example
	touch $(VENV)/.installed $@

venv install: $(VENV)/.installed
install-test: $(VENV)/.installed-dev

run: $(VENV)/.installed
	$(BIN)/telemetryd run --config $(CONFIG)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

# The documentation site, strict: a broken link or anchor between pages fails the build
# (not with --quiet, which hides the warnings strict mode counts).
docs: $(VENV)/.installed-dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

test: $(VENV)/.installed-dev lint docs
	$(BIN)/python -m pytest

# The bench extra adds matplotlib, for the plot next to each report.
$(VENV)/.installed-bench: $(VENV)/.installed-dev
	$(BIN)/pip install --quiet -e '.[bench]'
	touch $@

bench: $(VENV)/.installed-bench
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) build site *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
