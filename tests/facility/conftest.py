"""Fixtures of the facility tests (``make test-facility``): the production Tango database.

``production_db`` is one private MariaDB + Debian tango-db schema + cppTango DataBaseds for the
whole session (tests/facility/production_db.py), stopped by PID at the end. The start-up times
each test measures are collected in ``FACILITY_TIMINGS`` and printed at the end of the run, with
the versions combined: docs/deployment.md quotes them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.facility.production_db import (
    FACILITY_TIMINGS,
    FACILITY_VERSIONS,
    ProductionDatabase,
    running_production_db,
)


@pytest.fixture(scope="session")
def production_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProductionDatabase]:
    """The production database shared by the tests of a session."""
    with running_production_db(tmp_path_factory.mktemp("production-db")) as db:
        yield db


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not (FACILITY_TIMINGS or FACILITY_VERSIONS):
        return
    terminalreporter.section("facility: versions combined and start-up times measured")
    for name, version in FACILITY_VERSIONS.items():
        terminalreporter.write_line(f"{name:40s} {version}")
    for name, seconds in FACILITY_TIMINGS.items():
        terminalreporter.write_line(f"{name:60s} {seconds:8.2f} s")
