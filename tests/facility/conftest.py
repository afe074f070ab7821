"""Fixtures of the facility tests (``make test-facility``): the production Tango database.

``production_db`` is one private MariaDB + Debian tango-db schema + cppTango DataBaseds for the
whole session (tests/facility/production_db.py), stopped by PID at the end. The start-up times
each test measures are collected in ``FACILITY_TIMINGS`` and printed at the end of the run, with
the versions combined: docs/deployment.md quotes them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.facility.production_db import (
    FACILITY_TIMINGS,
    FACILITY_VERSIONS,
    ProductionDatabase,
    missing_tools,
    sardana_version,
)


@pytest.fixture(scope="session")
def production_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProductionDatabase]:
    missing = missing_tools()
    if missing:
        pytest.fail(f"the facility tests need {' '.join(missing)}: run `make facility-deps` (apt, as root)")
    db = ProductionDatabase(tmp_path_factory.mktemp("production-db"))
    try:
        db.start()
        FACILITY_TIMINGS.update({f"production database: {k}": v for k, v in db.timings_s.items()})
        FACILITY_VERSIONS.update(db.versions())
        FACILITY_VERSIONS["Sardana"] = sardana_version()
        yield db
    finally:
        db.stop()


@pytest.fixture()
def facility_tango_host(production_db: ProductionDatabase) -> Iterator[str]:
    """TANGO_HOST set to the production database for the test (as a beamline shell has it)."""
    previous = os.environ.get("TANGO_HOST")
    os.environ["TANGO_HOST"] = production_db.tango_host
    try:
        yield production_db.tango_host
    finally:
        if previous is None:
            os.environ.pop("TANGO_HOST", None)
        else:
            os.environ["TANGO_HOST"] = previous


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not (FACILITY_TIMINGS or FACILITY_VERSIONS):
        return
    terminalreporter.section("facility: versions combined and start-up times measured")
    for name, version in FACILITY_VERSIONS.items():
        terminalreporter.write_line(f"{name:40s} {version}")
    for name, seconds in FACILITY_TIMINGS.items():
        terminalreporter.write_line(f"{name:60s} {seconds:8.2f} s")
