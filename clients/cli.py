"""The `smart` command line: stack management now, device calls with the client issue."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clients.launcher import DEFAULT_CONFIG, DEFAULT_RUN_DIR, LaunchError, Stack


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smart", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("up", "start the database, Sardana and the four SMART servers"),
                       ("down", "stop every process `smart up` started (by PID)"),
                       ("status", "show the processes and every device's State")):
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR,
                         help=f"where the database file, PIDs and logs live (default {DEFAULT_RUN_DIR})")
        if name == "up":
            cmd.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                             help="stack configuration YAML (servers, devices, properties, Sardana)")
            cmd.add_argument("--port", type=int, default=0,
                             help="port of the embedded Tango database (default: a free one)")
            cmd.add_argument("--beamline", type=Path, default=None,
                             help="virtual beamline JSON (default: <run-dir>/beamline.json, made from --seed)")
            cmd.add_argument("--seed", type=int, default=0, help="seed of the virtual beamline made when none exists")
            cmd.add_argument("--facility", action="store_true",
                             help="use the TANGO_HOST of the environment; only register and start our servers")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "up":
            Stack(args.run_dir, args.config, facility=args.facility, port=args.port,
                  beamline=args.beamline, seed=args.seed).up()
        elif args.command == "down":
            survivors = Stack(args.run_dir).down()
            return 1 if survivors else 0
        elif args.command == "status":
            print(Stack(args.run_dir).status_text())
    except LaunchError as exc:
        print(f"smart {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
