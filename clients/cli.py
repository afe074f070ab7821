"""The `smart` command line: stack management (up/down/status) and thin device calls.

`register`, `particles`, `map` and `goto` each make one device call or run one macro
through the Door (see clients/commands.py); `--json` prints the result for scripts and
queues, and a refusal prints one line `smart CMD: SMART_<Reason>: what to do` and exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from clients.launcher import DEFAULT_CONFIG, DEFAULT_RUN_DIR, LaunchError, Stack

DEVICE_COMMANDS = ("register", "particles", "map", "goto")


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
    _add_device_commands(sub)
    return parser


def _add_device_commands(sub: argparse._SubParsersAction) -> None:
    """The subcommands that talk to the running devices and the Door."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--tango-host", default=None,
                        help="HOST:PORT of the Tango database (default: TANGO_HOST, else run/stack/env.sh)")
    common.add_argument("--door", default=None, help="Door that runs the macros (default smart/door/01)")
    common.add_argument("--json", action="store_true", help="print the result as one JSON object")
    cmd = sub.add_parser("register", parents=[common], help="register a reference image to the live camera",
                         description="Runs smart_register through the Door: grab a camera frame, register "
                                     "the reference to it, store reference -> camera in the mapper.")
    cmd.add_argument("reference_image", help="reference image (TIFF with pixel size, PNG, JPEG)")
    cmd.add_argument("--model", default="similarity", choices=("translation", "similarity"))
    cmd.add_argument("--frame", default="sem", help="name of the reference frame in the mapper (default sem)")
    cmd = sub.add_parser("particles", parents=[common], help="detect particles and print the table",
                         description="Runs smart_find_particles through the Door on IMAGE (default: the "
                                     "registered reference) and prints ParticleDS's table.")
    cmd.add_argument("image", nargs="?", default=None, help="image to detect on (default: registered reference)")
    cmd.add_argument("--set", dest="settings", action="append", default=[], metavar="NAME=VALUE",
                     help="write a ParticleDS setting first (memorized), e.g. --set Diameter=7")
    cmd.add_argument("--show", action="store_true", help="only print the current results, detect nothing")
    cmd = sub.add_parser("map", parents=[common], help="map a point from one frame to another",
                         description="CoordMapperDS Map of one point; camera points without "
                                     "--stage-position are in the live frame (current motors).")
    cmd.add_argument("frame_from", metavar="FROM")
    cmd.add_argument("frame_to", metavar="TO")
    cmd.add_argument("x", type=float)
    cmd.add_argument("y", type=float)
    cmd.add_argument("--stage-position", type=float, nargs=2, metavar=("SX", "SY"), default=None,
                     help="stage position of the camera frame the point is in")
    cmd = sub.add_parser("goto", parents=[common], help="put a particle or a point in the beam",
                         description="Runs smart_goto INDEX or smart_goto_xy FRAME X Y through the Door, so "
                                     "the limits and Sardana's Stop apply.")
    cmd.add_argument("index", type=int, nargs="?", default=None, help="row of the particle table")
    cmd.add_argument("--frame", nargs=3, metavar=("FRAME", "X", "Y"), default=None,
                     help="a point of a frame instead of a particle")


def _run_device_command(args: argparse.Namespace) -> dict:
    from clients.commands import DEFAULT_DOOR, CommandError, SmartClient, parse_setting, resolve_tango_host

    client = SmartClient(resolve_tango_host(args.tango_host), door=args.door or DEFAULT_DOOR)
    try:
        if args.command == "register":
            return client.register(args.reference_image, args.model, args.frame)
        if args.command == "particles":
            settings = dict(parse_setting(text) for text in args.settings)
            return client.particles(args.image, settings, detect=not args.show)
        if args.command == "map":
            return client.map(args.frame_from, args.frame_to, [[args.x, args.y]], args.stage_position)
        if (args.index is None) == (args.frame is None):
            raise CommandError("SMART_BadArgument", "give either a particle INDEX or --frame FRAME X Y")
        if args.index is not None:
            return client.goto(index=args.index)
        frame, x, y = args.frame
        try:
            return client.goto(frame=frame, x=float(x), y=float(y))
        except ValueError:
            raise CommandError("SMART_BadArgument", f"--frame {frame} {x} {y}: X and Y must be numbers") from None
    finally:
        client.close()


def _summary(command: str, result: dict) -> str:
    """One human line per subcommand; --json gives everything."""
    if command == "register":
        reg = result["registration"]
        return (f"{result['frame']} -> camera stored: rotation {reg.get('rotation_deg', float('nan')):.3f} deg, "
                f"scale {reg.get('scale', float('nan')):.5f}, confidence {reg.get('confidence', float('nan')):.3f}, "
                f"stage position {result['stage_position']}")
    if command == "particles":
        return particle_table(result)
    if command == "map":
        (x, y), = result["points"]
        sigma = (result.get("uncertainty") or [None])[0]
        inside = result.get("within_limits", [False])[0]
        return (f"{x!r} {y!r} {result.get('unit', '')} (1-sigma {sigma}, "
                f"{'within' if inside else 'NOT within'} the stage limits)")
    pos = result["stage_position"]
    return f"{result['macro']}: stage at " + ", ".join(
        f"{name} {value:.6f}" for name, value in zip(result["motors"], pos, strict=True))


PARTICLE_COLUMNS = (("index", "d"), ("x (px)", ".2f"), ("y (px)", ".2f"), ("mass", ".3g"), ("size (px)", ".2f"),
                    ("ecc", ".2f"), ("isolated", ""), ("nearest (px)", ".1f"))
"""The particle table's columns: positions and sizes in pixels of the detected image."""


def particle_table(result: dict) -> str:
    """One summary line and the particle table with a header row (units in the titles)."""
    from clients.display import format_table

    head = f"{result['count']} particles, {result['isolated']} isolated"
    if result.get("elapsed_ms") is not None:
        head += f" (detection {result['elapsed_ms']:.0f} ms)"
    if not result["particles"]:
        return head
    rows = [(r.get("index"), r.get("x"), r.get("y"), r.get("mass"), r.get("size"), r.get("ecc"),
             bool(r.get("isolated")), r.get("nn_distance")) for r in result["particles"]]
    return head + "\n" + format_table(PARTICLE_COLUMNS, rows)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in DEVICE_COMMANDS:
        from clients.commands import CommandError

        try:
            result = _run_device_command(args)
        except CommandError as exc:
            print(f"smart {args.command}: {exc.one_line()}", file=sys.stderr)
            return 1
        print(json.dumps(result) if args.json else _summary(args.command, result))
        return 0
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
