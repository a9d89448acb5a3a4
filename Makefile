# Two commands do everything; each sets itself up (virtual environment, dependencies) first.
#   make demo   the daemon on the simulator with an optimisation session, live progress
#               (make demo DEMO_ARGS=--keep keeps its data folder)
#   make test   lint, type check (mypy, settings in pyproject.toml) and the whole test suite
#               (what CI runs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stedloop-installed
# The CPU wheel of torch; a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0

.PHONY: demo test lint bench setup browser clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PIN)
	@# -qq: setuptools prints an information notice for every editable install whose folders are
	@# mapped (drivers/, plugins/, configs/, models/ install as stedloop.*); errors still print.
	$(BIN)/python -m pip install -qq -e '.[dev]'
	@touch $@

# Headless Chromium for the web tests (Debian's package); needs root or sudo.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing: run 'sudo apt-get install chromium' for the browser tests"; fi; }

demo: $(STAMP)
	$(BIN)/stedloop demo $(DEMO_ARGS)

# The venv's bin/ goes first on PATH: tests run its `stedloop` and `hadolint` as subprocesses.
# The headless-browser tests run in a pytest process of their own: in one process with the rest,
# daemon tests that came after them went unanswered in clean-clone CI runs (cause not found yet).
test: $(STAMP) browser
	$(BIN)/python -m ruff check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m mypy
	@# pytest exits 5 when it collected no tests (e.g. a filtered run): say so, not fail.
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q --ignore=tests/browser $(PYTEST_ARGS); \
	main=$$?; if [ $$main -eq 5 ]; then echo "pytest collected no tests"; main=0; fi; \
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q tests/browser $(PYTEST_ARGS); \
	web=$$?; if [ $$web -eq 5 ]; then echo "pytest collected no browser tests"; web=0; fi; \
	if [ $$main -ne 0 ]; then exit $$main; fi; exit $$web

lint: $(STAMP)
	$(BIN)/python -m ruff check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m ruff format --check .
	$(BIN)/python -m mypy

bench: $(STAMP)
	for script in benchmarks/bench_*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
