"""Devices under test in their own fresh server process, on a Tango file database.

The stand-in for ``DeviceTestContext(process=True)``: the same database-less ``#dbase=no``
access and file-database properties, but a new interpreter instead of a fork of the test
process, started on a free loopback port and stopped by its PID when the block ends (or when
it fails to start, so no half-started server outlives the test).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from clients.file_db_server import run_on_file_database
from tests.serve_devices import SERVER_NAME


@contextmanager
def serve_devices(classes: Sequence[type], devices: dict[str, tuple[str, dict[str, Any]]],
                  folder: Path | None = None, start_timeout_s: float = 60.0) -> Iterator[dict[str, str]]:
    """Serve ``devices`` ({name: (class name, properties)}) of ``classes`` in one process;
    yields {name: TRL}. Passing the same ``folder`` again restarts on the same file database,
    so memorized attributes can be checked across a restart."""
    specs = [f"{cls.__module__}:{cls.__qualname__}" for cls in classes]
    command = [sys.executable, "-m", "tests.serve_devices", *specs]
    with run_on_file_database(command, f"{SERVER_NAME}/test", devices, folder, start_timeout_s) as trls:
        yield trls
