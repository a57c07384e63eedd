# sipbridge: build, check and test.  `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LINT_PATHS := sipbridge rtp rtmp webrtc tests bench fuzz
ARTIFACTS := artifacts
PYTEST_ARGS ?=

.PHONY: venv run peers lint typecheck test clean distclean

## venv: .venv with the package and its test extras; reinstalled when pyproject.toml changes
venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else \
		"python3 >= 3.11 is required, found " + sys.version.split()[0])'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -e '.[test]'
	@touch $@

## run: the REST service with the default settings
run: venv
	$(BIN)/sipbridge serve --config settings.toml

## peers: the Debian packages of the real peers the interop tests drive
peers:
	bash scripts/install-peers.sh

## lint: ruff over the packages, tests and benchmarks
lint: venv
	$(BIN)/ruff check --no-cache $(LINT_PATHS)

## typecheck: mypy --strict over the packages listed in pyproject.toml
typecheck: venv
	$(BIN)/mypy --strict

## test: everything CI checks; JUnit report in artifacts/junit.xml
test: peers venv lint typecheck
	@mkdir -p $(ARTIFACTS)
	$(BIN)/pytest -q --junitxml=$(ARTIFACTS)/junit.xml $(PYTEST_ARGS)

## clean: test outputs, caches and build leftovers (keeps .venv)
clean:
	rm -rf $(ARTIFACTS) .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

## distclean: clean, and remove .venv and the egg-info
distclean: clean
	rm -rf $(VENV) *.egg-info
