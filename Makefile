# hydra: everyday commands. `make help` lists them; every target prints what it runs.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := switch

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= $(shell hostname)
FLAKE ?= .

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 12

# --- development (any Linux machine with Python 3.11+) ----------------------------------

$(BIN)/.installed: python/pyproject.toml python/poetry.lock python/tools/lock_constraints.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python python/tools/lock_constraints.py python/poetry.lock > $(VENV)/constraints.txt
	$(BIN)/pip install --quiet --constraint $(VENV)/constraints.txt --editable 'python[dev,rocm]'
	touch $@

.PHONY: venv
venv: $(BIN)/.installed ## create .venv with the project and its test tools (locked versions)

.PHONY: lint
lint: $(BIN)/.installed ## ruff and mypy --strict
	cd python && ../$(BIN)/ruff check .
	cd python && ../$(BIN)/ruff format --check .
	cd python && ../$(BIN)/mypy

.PHONY: nix-parse
nix-parse: ## parse every .nix file (when Nix is installed)
	@if command -v nix-instantiate >/dev/null; then \
	  echo "nix-instantiate --parse (every .nix file)"; \
	  git ls-files -co --exclude-standard '*.nix' | while read -r f; do \
	    nix-instantiate --parse "$$f" >/dev/null || { echo "does not parse: $$f"; exit 1; }; \
	  done; \
	else echo "nix-instantiate not installed: skipping the Nix parse check"; fi

.PHONY: test
test: lint nix-parse ## set up .venv, then lint, type-check, parse Nix, run pytest
	cd python && ../$(BIN)/pytest

.PHONY: run
run: $(BIN)/.installed ## exporter + health agent on loopback (BACKEND=synthetic for demo GPUs)
	PATH="$(CURDIR)/$(BIN):$$PATH" scripts/run-local $(or $(BACKEND),auto)
