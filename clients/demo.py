"""`make demo`: bring the virtual beamline up, run through the Door, shut everything down.

The demo is the first thing a new user runs, so it always cleans up after itself:
whatever happens in between, every process it started is stopped before it exits.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from clients.door import DoorClient, MacroFailed
from clients.launcher import DEFAULT_CONFIG, REPO, LaunchError, Stack

DEMO_DIR = REPO / "run" / "demo"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__)
    parser.add_argument("--run-dir", type=Path, default=DEMO_DIR, help="where logs and results go")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="stack configuration YAML")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stack = Stack(args.run_dir / "stack", args.config)
    try:
        os.environ["TANGO_HOST"] = stack.up()
        with DoorClient("smart/door/01", echo=lambda stream, line: print(f"  [{stream}] {line}")) as door:
            started = time.monotonic()
            print("\nrunning `ascan samx 0 1 5 0.1` through the Door smart/door/01:")
            door.run("ascan samx 0 1 5 0.1", timeout_s=120)
            print(f"scan finished in {time.monotonic() - started:.1f} s")
    except (LaunchError, MacroFailed) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.down()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
