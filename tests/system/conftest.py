"""The running stack for system tests: started once per session, stopped by PID.

Tests that need the database, Sardana and the four servers take the ``stack``
fixture; it brings the stack up from the project's own configuration in a
temporary run directory on a free loopback port, and stops exactly the processes
it started when the session ends.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from clients.launcher import Stack
from tests.system.stacks import running_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    run_dir = tmp_path_factory.mktemp("stack")
    # with the SEM image of the sample, as `smart up` leaves it for working by hand
    launched = Stack(run_dir, echo=False, sem_image=True)
    with running_stack(launched):
        yield launched


def device_trl(stack: Stack, name: str) -> str:
    """A fully qualified Tango name, immune to whatever TANGO_HOST other code set."""
    return f"tango://{stack.tango_host}/{name}"

