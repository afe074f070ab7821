# SMART on Tango. `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=
PYTEST_ARGS ?=
# The whole suite takes ~15-20 min on 2 cores; a run still going after this long is stuck somewhere:
# SIGINT makes pytest print where, and the run fails instead of hanging.
TEST_TIMEOUT_S ?= 2400

.PHONY: venv demo night test test-night unit bench reliability lint up down status clean viewer-deps facility-deps test-facility

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,bench]"
	@touch $(STAMP)

demo: venv
	$(BIN)/python -m clients.demo $(ARGS)

# A whole night through the Door, scored against the truth, with SIGKILLs and a beam loss on the way
# (clients/night.py; docs/workflow.md "The night"): make night ARGS="--particles 300 --hours 8 --seed 7"
night: venv
	$(BIN)/python -m clients.night $(ARGS)

# Three pytest processes, one summary (tests/tiers.py): the unit tier alongside the system tier,
# then the Qt/Taurus tests in a process of their own. PYTEST_ARGS naming tests runs just those.
test: venv
	QT_QPA_PLATFORM=offscreen timeout --signal=INT --kill-after=60 $(TEST_TIMEOUT_S) \
		$(BIN)/python -m tests.tiers $(PYTEST_ARGS)

# The facility tests (tests/facility) run the Tango database a facility runs: MariaDB with Debian's
# tango-db schema and cppTango's DataBaseds, and Debian's Starter. Those come from apt (root, once;
# skipped when dpkg already has them); pytango and Sardana stay in the venv.
FACILITY_PACKAGES := mariadb-server mariadb-client tango-db tango-starter
FACILITY_TIMEOUT_S ?= 3600

facility-deps:
	@missing=""; for pkg in $(FACILITY_PACKAGES); do \
		dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing with apt:$$missing"; \
		apt-get -o DPkg::Lock::Timeout=600 update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
			--no-install-recommends $$missing; \
	else echo "facility packages already installed: $(FACILITY_PACKAGES)"; fi

# Tests that take minutes or need system packages (tests/facility), ~20 min on 2 cores: the
# production Tango database (MariaDB + DataBaseds), `smart up --facility`, the workflow against it,
# Starter, the viewers under Xvfb, and the stack spread over three test hosts (network namespaces;
# root and `ip`), each host's link cut for 30 s (numbers in run/facility/several_hosts.json).
# See docs/deployment.md.
test-facility: venv viewer-deps facility-deps
	QT_QPA_PLATFORM=offscreen timeout --signal=INT --kill-after=60 $(FACILITY_TIMEOUT_S) \
		$(BIN)/python -m pytest tests/facility -p no:cacheprovider $(PYTEST_ARGS)

# A small whole night (tests/night/test_night.py: two tiles, 12 particles, one simulated hour,
# SIGKILLs and a beam loss; make test runs it too, beside the system tier) and the several-regions
# workflow (tests/night/test_regions.py, only here), 10-20 min on 2 cores. docs/workflow.md, "The night".
test-night: venv
	QT_QPA_PLATFORM=offscreen timeout --signal=INT --kill-after=60 $(TEST_TIMEOUT_S) \
		$(BIN)/python -m pytest tests/night -p no:cacheprovider $(PYTEST_ARGS)

unit: venv
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

bench: venv
	$(BIN)/python -m benchmarks $(ARGS)

# ~13 min on 2 cores; results in run/reliability/ (results.json, results.md); see docs/reliability.md
reliability: venv
	$(BIN)/python -m tests.reliability $(ARGS)

# ruff on everything; mypy on servers/ (pyproject.toml [tool.mypy]), which must stay clean
lint: venv
	$(BIN)/ruff check .
	$(BIN)/python -m mypy

up: venv
	$(BIN)/smart up $(ARGS)

down: venv
	$(BIN)/smart down $(ARGS)

status: venv
	$(BIN)/smart status $(ARGS)

# The X server the viewer tests (lavue, taurus) draw into, headless, and the xcb libraries
# PyQt5's X11 platform plugin needs that a minimal Debian lacks; apt, idempotent.
VIEWER_PACKAGES := xvfb libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxkbcommon-x11-0 \
	libxcb-image0 libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xkb1
viewer-deps:
	@dpkg -s $(VIEWER_PACKAGES) >/dev/null 2>&1 || { apt-get -o DPkg::Lock::Timeout=600 update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 \
		install -y --no-install-recommends $(VIEWER_PACKAGES); }

clean:
	rm -rf run
