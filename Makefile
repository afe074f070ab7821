# SMART on Tango. `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=
PYTEST_ARGS ?=
# The whole suite takes ~6 min on 2 cores; a run still going after this long is stuck somewhere:
# SIGINT makes pytest print where, and the run fails instead of hanging.
TEST_TIMEOUT_S ?= 2400

.PHONY: venv demo test unit bench reliability lint up down status clean viewer-deps

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,bench]"
	@touch $(STAMP)

demo: venv
	$(BIN)/python -m clients.demo $(ARGS)

test: venv
	QT_QPA_PLATFORM=offscreen timeout --signal=INT --kill-after=60 $(TEST_TIMEOUT_S) \
		$(BIN)/python -m pytest $(PYTEST_ARGS)

unit: venv
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

bench: venv
	$(BIN)/python -m benchmarks $(ARGS)

# ~13 min on 2 cores; results in run/reliability/ (results.json, results.md); see docs/reliability.md
reliability: venv
	$(BIN)/python -m tests.reliability $(ARGS)

lint: venv
	$(BIN)/ruff check .

up: venv
	$(BIN)/smart up $(ARGS)

down: venv
	$(BIN)/smart down $(ARGS)

status: venv
	$(BIN)/smart status $(ARGS)

# The X server the viewer tests (lavue, taurus) draw into, headless; apt, idempotent.
viewer-deps:
	@dpkg -s xvfb >/dev/null 2>&1 || { apt-get -o DPkg::Lock::Timeout=600 update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 \
		install -y --no-install-recommends xvfb; }

clean:
	rm -rf run
