# backbone: one-command set-up. `make plan` and `make test` create the virtualenv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STACK  ?= dev

.PHONY: help venv plan test lint bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/backbone: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

venv: $(BIN)/backbone  ## create .venv (the same one Pulumi.yaml names) and install the kit with its dev tools

plan: venv  ## print the plan of a stack offline (STACK=dev by default; no cloud, no Pulumi CLI)
	$(BIN)/backbone plan $(STACK)

# Two pytest-xdist workers per core: most real-part tests wait (on a server, a container, a
# timeout) rather than compute. Tests spread one by one, except the files tests/conftest.py keeps
# whole (costly module fixtures). WORKERS=2 make test for fewer.
WORKERS ?= $(shell echo $$(( $$(nproc 2>/dev/null || echo 1) * 2 )))

# Bytecode is written even where the machine sets PYTHONDONTWRITEBYTECODE (these do): each module
# is then compiled once per run, not again by every worker and every process the tests start.
test: venv  ## run the whole test suite (pytest-xdist: two workers per core, tests spread one by one)
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/python -m pytest -n $(WORKERS) --dist loadgroup

lint: venv  ## ruff lint + format check, mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: venv  ## benchmark `backbone plan` per stack against the import floors (bench/app_load.py: the app)
	$(BIN)/python bench/plan_speed.py

clean:  ## remove the virtualenv and build caches
	rm -rf $(VENV) .backbone .tools
