# hydra: everyday commands. `make help` lists them; every target prints what it runs.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := switch

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= $(shell hostname)
# The hosts the flake defines (hosts/<name>/default.nix). A target that builds or activates a
# host refuses any other name, so `make` on a laptop lists the hosts instead of trying one.
HOSTS := $(sort $(patsubst hosts/%/default.nix,%,$(wildcard hosts/*/default.nix)))
NEEDS_HOST := $(filter switch trace build plan,$(or $(MAKECMDGOALS),switch))$(if \
  $(filter command line environment,$(origin HOST)),$(filter deploy,$(MAKECMDGOALS)))
ifneq ($(NEEDS_HOST),)
ifeq ($(filter $(HOST),$(HOSTS)),)
$(error HOST=$(HOST) is not a host of this flake; it defines: $(HOSTS) (make $(firstword $(NEEDS_HOST)) HOST=<name>))
endif
endif
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

ENGINE_CACHE ?= $(or $(HYDRA_ENGINE_CACHE),/var/cache/hydra-engines)

.PHONY: test-engines
test-engines: $(BIN)/.installed ## real llama-server + LiteLLM (built once, cached in ENGINE_CACHE): the real-engine tests
	HYDRA_ENGINE_CACHE=$(ENGINE_CACHE) PYTHON=$(CURDIR)/$(BIN)/python scripts/build-llama-server > $(VENV)/engines.env
	set -a && . ./$(VENV)/engines.env && set +a && cd python && ../$(BIN)/pytest -m real_engine tests/engines_real

.PHONY: run
run: $(BIN)/.installed ## exporter + health agent on loopback (BACKEND=synthetic for demo GPUs)
	PATH="$(CURDIR)/$(BIN):$$PATH" scripts/run-local $(or $(BACKEND),auto)

# --- NixOS (on a fleet host; build/check/deploy from any machine with Nix) ----------------
# switch, deploy, trace and rollback run `hydra-deploy`: it builds here, shows the closure
# difference, copies the closure (deploy), then starts ONE transient unit on the host that
# records the running system, arms a dead-man timer, activates the new system with
# `switch-to-configuration test`, gates it, and makes it the boot default only if the gate
# passes; otherwise it re-activates the recorded system. The host decides by itself: stopping
# make, closing the terminal or losing the connection changes nothing there. Exit codes:
# `hydra-deploy --help`. Building runs as you; the host's unit is started with sudo if needed.

GATE_TIMEOUT ?= 300
TARGET ?= root@$(HOST)
HASH := \#
# hydra-deploy from PATH (an installed host), else from this flake.
HYDRA_DEPLOY = $(or $(shell command -v hydra-deploy 2>/dev/null),nix shell $(FLAKE)$(HASH)hydra-fleet --command hydra-deploy)

.PHONY: switch
switch: ## build this host's system, activate it, keep it only if the health gate passes (default)
	$(HYDRA_DEPLOY) switch --flake $(FLAKE)#$(HOST) --gate-timeout $(GATE_TIMEOUT)

.PHONY: trace
trace: ## switch, with --show-trace for Nix evaluation errors
	$(HYDRA_DEPLOY) switch --flake $(FLAKE)#$(HOST) --gate-timeout $(GATE_TIMEOUT) --show-trace

.PHONY: deploy
deploy: ## HOST=name [TARGET=root@address]: build here, activate on HOST over SSH through the gate
	@test "$(origin HOST)" = "command line" || { echo "usage: make deploy HOST=<hydra-ai|hydra-compute|l> [TARGET=root@<address>]" >&2; exit 64; }
	$(HYDRA_DEPLOY) switch --flake $(FLAKE)#$(HOST) --target-host $(TARGET) --gate-timeout $(GATE_TIMEOUT)

.PHONY: rollback
rollback: ## back to the profile's generation if another runs, else the one before (TARGET=root@address)
	$(HYDRA_DEPLOY) rollback$(if $(filter command line,$(origin TARGET)), --target-host $(TARGET))

.PHONY: build
build: ## build this host's system (HOST=name for another) into ./result without activating it
	nix build $(FLAKE)#nixosConfigurations.$(HOST).config.system.build.toplevel

.PHONY: plan
plan: ## HOST=name: the per-GPU VRAM plan of HOST's engine instances, built here, nothing deployed
	nix build --no-link --print-out-paths '$(FLAKE)#nixosConfigurations.$(HOST).config.environment.etc."hydra-inference/plan.txt".source' | xargs cat

.PHONY: update
update: ## move the nixpkgs pin forward (flake.lock); review, then make switch
	nix flake update

.PHONY: check
check: ## nix flake check: VM tests, the package build with its pytest, formatting
	nix flake check $(FLAKE)
