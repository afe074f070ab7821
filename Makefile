# SMART on Tango. `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=
PYTEST_ARGS ?=

.PHONY: venv demo test unit bench lint up down status clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,bench]"
	@touch $(STAMP)

demo: venv
	$(BIN)/python -m clients.demo $(ARGS)

test: venv
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest $(PYTEST_ARGS)

unit: venv
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

bench: venv
	$(BIN)/python -m benchmarks $(ARGS)

lint: venv
	$(BIN)/ruff check .

up: venv
	$(BIN)/smart up $(ARGS)

down: venv
	$(BIN)/smart down $(ARGS)

status: venv
	$(BIN)/smart status $(ARGS)

clean:
	rm -rf run
