# Everything a user or CI runs. `make run` and `make test` work on a fresh checkout.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= telemetryd.toml

.PHONY: run test test-jupyter-oldest lint typecheck docs bench venv install install-test clean

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

# The suite runs with the newest jupyter_events and jupyter_server pyproject.toml allows, then
# the Jupyter tests again with the oldest (test-jupyter-oldest).
test: $(VENV)/.installed-dev lint docs
	$(BIN)/python -m pytest
	$(MAKE) --no-print-directory test-jupyter-oldest

# The fast path of telemetryd.jupyter reads jupyter_events' private state, within the range
# its guard allows: the tests that load it, or otherwise use jupyter_events or a Jupyter Server,
# run in a second venv with the oldest versions (tests/constraints-oldest.txt). It has only the
# server and test extras (those tests need nothing else; ~30 s to build, once).
OLDEST     := .venv-oldest
JUPYTER_TESTS := tests/test_jupyter_versions.py tests/test_jupyter_extension.py \
	tests/test_jupyter_server_compat.py tests/test_pioneer_live.py tests/test_jupyterhub_live.py \
	tests/test_registry.py

$(OLDEST)/bin/python:
	$(PYTHON) -m venv $(OLDEST)
	$(OLDEST)/bin/pip install --quiet --upgrade pip

$(OLDEST)/.installed: pyproject.toml tests/constraints-oldest.txt | $(OLDEST)/bin/python
	$(OLDEST)/bin/pip install --quiet -c tests/constraints-oldest.txt -e '.[server,test]'
	touch $@

test-jupyter-oldest: $(OLDEST)/.installed
	$(OLDEST)/bin/python -m pytest $(JUPYTER_TESTS)

# The bench extra adds matplotlib, for the plot next to each report.
$(VENV)/.installed-bench: $(VENV)/.installed-dev
	$(BIN)/pip install --quiet -e '.[bench]'
	touch $@

bench: $(VENV)/.installed-bench
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) $(OLDEST) build site *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
