# Every target builds the virtual environment (.venv) when it is missing, and reuses it until
# pyproject.toml changes. `make help` lists the targets.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The machine-wide pip config names extra local indexes that may be absent; pip warns once per package.
PIP_NOISE := is ignored: it is neither a file nor a directory

.DEFAULT_GOAL := help
.PHONY: help venv demo test test-fast lint bench stop clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || { echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	@echo "installing dependencies into $(VENV) (first time: a few minutes, torch is large)"
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]' 2> >(grep -v "$(PIP_NOISE)" >&2)
	@touch $(STAMP)

venv: $(STAMP) ## create or refresh the virtual environment
	@echo "$(VENV) is ready"

demo: $(STAMP) ## run the whole pipeline on this machine; leaves the endpoint serving on :8080 (HP="epochs=10 seed=1")
	$(BIN)/mlops pipeline --local $(foreach hp,$(HP),--hp $(hp))

test: $(STAMP) ## run the whole test suite (unit, functional, end-to-end)
	$(BIN)/python -m pytest

test-fast: $(STAMP) ## unit and functional tests only
	$(BIN)/python -m pytest -m "not e2e"

lint: $(STAMP) ## ruff, ruff format, mypy; hadolint, workflow schema + zizmor, shellcheck, cfn-lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/hadolint --failure-threshold warning Dockerfile.train Dockerfile.serve
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(BIN)/zizmor --offline .github/workflows
	$(BIN)/shellcheck .ci/run scripts/*.sh
	$(BIN)/cfn-lint infra/cloudformation/*.yaml

bench: $(STAMP) ## benchmarks with targets, JSON in bench/results/ (BENCH="serving training" QUICK=1 TORCHSERVE=1 ARGS=...)
	$(BIN)/python tests/benchmarks/run.py $(BENCH) $(if $(QUICK),--quick) $(if $(TORCHSERVE),--torchserve) $(ARGS)

stop: $(STAMP) ## stop the local endpoint started by `make demo`
	$(BIN)/mlops endpoint stop --local

clean: ## remove local state (.mlops: data, jobs, registry, endpoint); stops the endpoint first
	@test ! -x $(BIN)/mlops || $(BIN)/mlops endpoint stop --local || true
	rm -rf .mlops

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:[^#]*## /\t/' | awk -F'\t' '{printf "  make %-10s %s\n", $$1, $$2}'
