"""Run device classes named on the command line in one Tango device server.

``python -m tests.serve_devices module:Class [module:Class ...] INSTANCE [tango options]``

Tests start devices under test this way, in a fresh interpreter, instead of forking the test
process (``DeviceTestContext(process=True)``): a fork copies the test process's omniORB and
event threads, and the forked server then now and then hangs at initialisation and again at
the test process's exit (observed in CI). See :func:`tests.device_server.serve_devices`.
"""

from __future__ import annotations

import importlib
import sys
from itertools import takewhile

from tango.server import run

SERVER_NAME = "SmartTestServer"
"""The executable name the file database declares these servers under."""


def load_class(spec: str) -> type:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def main(argv: list[str]) -> None:
    specs = list(takewhile(lambda arg: ":" in arg, argv))
    rest = argv[len(specs):]
    if not specs or not rest:
        sys.exit(f"usage: python -m tests.serve_devices module:Class [...] INSTANCE [tango options]; got {argv}")
    run(tuple(load_class(spec) for spec in specs), args=[SERVER_NAME, *rest])


if __name__ == "__main__":
    main(sys.argv[1:])
