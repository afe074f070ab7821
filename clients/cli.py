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

DEVICE_COMMANDS = ("register", "particles", "map", "goto", "beam", "queue")


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
                             help="use the TANGO_HOST of the environment (a facility database): register and "
                                  "start our servers (and Sardana when the configuration has a sardana: section)")
            cmd.add_argument("--starter", default=None, metavar="HOST",
                             help="with --facility: hand the servers to the Starter tango/admin/HOST (start-up "
                                  "levels from the configuration) instead of starting them; `smart down` stops "
                                  "them through it. Its StartDsPath must hold <run-dir>/bin")
            cmd.add_argument("--listen", default="127.0.0.1", metavar="ADDRESS",
                             help="with --facility: the address our servers listen on and publish (this host's "
                                  "address on the beamline network, so that other hosts reach them; default "
                                  "loopback only)")
            cmd.add_argument("--dsconfig", type=Path, default=None, metavar="FILE.json",
                             help="register the servers of this dsconfig JSON file (json2tango's format) "
                                  "instead of the YAML's servers: section, and start them")
    _add_config_commands(sub)
    _add_device_commands(sub)
    _add_report_command(sub)
    return parser


def _add_config_commands(sub: argparse._SubParsersAction) -> None:
    """`smart config export|apply`: the stack's Tango configuration as a dsconfig JSON file."""
    config = sub.add_parser("config", help="export / apply the servers' Tango configuration as dsconfig JSON",
                            description="The servers, devices and properties of the stack in MAX IV's dsconfig "
                                        "JSON format (what json2tango applies). See docs/deployment.md.")
    actions = config.add_subparsers(dest="action", required=True)
    export = actions.add_parser("export", help="write the running stack's configuration (or the YAML's) to FILE",
                                description="Reads the Tango database for the servers named in the stack YAML "
                                            "and writes them, with their device properties, as dsconfig JSON.")
    export.add_argument("file", type=Path, metavar="FILE.json")
    export.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="stack YAML naming the servers")
    export.add_argument("--from-yaml", action="store_true",
                        help="no database: write the YAML's servers with their properties expanded")
    export.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR,
                        help="run directory for {run}/{beamline} in the YAML (with --from-yaml)")
    export.add_argument("--tango-host", default=None,
                        help="HOST:PORT of the Tango database (default: TANGO_HOST, else run/stack/env.sh)")
    apply = actions.add_parser("apply", help="apply FILE to the Tango database (as json2tango --write)",
                               description="Checks FILE against dsconfig's schema, prints the database calls "
                                           "dsconfig plans and makes them. The servers are not started: "
                                           "`smart up --facility --dsconfig FILE` does both.")
    apply.add_argument("file", type=Path, metavar="FILE.json")
    apply.add_argument("--tango-host", default=None,
                       help="HOST:PORT of the Tango database (default: TANGO_HOST, else run/stack/env.sh)")
    apply.add_argument("--dry-run", action="store_true", help="only print the planned calls (json2tango without -w)")
    apply.add_argument("--update", action="store_true",
                       help="only add and change; remove no device or property (json2tango --update)")


def _run_config_command(args: argparse.Namespace) -> int:
    import tango

    from clients import dsconfig_io
    from clients.commands import CommandError, resolve_tango_host
    from clients.launcher import StackConfig

    try:
        if args.action == "export" and args.from_yaml:
            places = Stack(args.run_dir).places()
            data = dsconfig_io.from_stack_config(StackConfig.load(args.config, places), str(args.config))
        else:
            # a broken file is refused before any database is asked
            data = dsconfig_io.load(args.file) if args.action == "apply" else {}
            host = resolve_tango_host(args.tango_host)
            db = tango.Database(*host.split(":"))
            if args.action == "export":
                names = [spec.name for spec in StackConfig.load(args.config, {}).servers]
                data = dsconfig_io.from_database(db, names, f"tango://{host}")
            else:
                calls = dsconfig_io.apply(db, data, write=not args.dry_run, update=args.update)
                for line in calls:
                    print(f"  {line}")
                done = "planned (nothing written: --dry-run)" if args.dry_run else "made"
                print(f"{args.file}: {len(calls)} database call(s) {done} on {host}"
                      + ("" if calls else "; the database already matches"))
                return 0
        dsconfig_io.write(data, args.file)
        count = sum(len(devs) for insts in data["servers"].values() for classes in insts.values()
                    for devs in classes.values())
        print(f"{args.file}: {len(data['servers'])} server(s), {count} device(s) from {data['_source']}")
        return 0
    except (dsconfig_io.DsconfigError, LaunchError) as exc:
        print(f"smart config {args.action}: SMART_BadConfig: {exc}", file=sys.stderr)
    except CommandError as exc:
        print(f"smart config {args.action}: {exc.one_line()}", file=sys.stderr)
    except tango.DevFailed as exc:
        print(f"smart config {args.action}: SMART_NotReady: the Tango database did not answer: "
              f"{exc.args[0].desc.strip()}", file=sys.stderr)
    return 1


def _add_report_command(sub: argparse._SubParsersAction) -> None:
    text = "write the morning report (HTML) of a night from its scan files and logs"
    cmd = sub.add_parser("report", help=text, description=text)
    cmd.add_argument("run_dir", type=Path, nargs="?", default=DEFAULT_RUN_DIR,
                     help=f"folder holding the night's scan files and logs (default {DEFAULT_RUN_DIR})")
    cmd.add_argument("-o", "--output", type=Path, default=None, help="report file (default RUN_DIR/report.html)")


def _report(args: argparse.Namespace) -> int:
    """``smart report``: nothing but files is read, so it works with the stack down."""
    from clients.report import write_report

    if not args.run_dir.is_dir():
        print(f"smart report: SMART_NotFound: no folder {args.run_dir}; give the run folder of the night "
              "(e.g. run/stack or run/demo)", file=sys.stderr)
        return 1
    path = write_report(args.run_dir, args.output)
    print(f"report written: {path.resolve()}")
    return 0


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
    cmd.add_argument("reference_image", help="reference image: SEM TIFF (FEI, Zeiss, TESCAN), AFM .spm/.gwy/.ibw/"
                                             ".jpk, Bruker EDX .bcf, TIFF, PNG, JPEG (docs/interface.md)")
    cmd.add_argument("--channel", default=None,
                     help="AFM channel (default: height) or EDX element map, e.g. Fe_Ka, of a multi-channel file")
    cmd.add_argument("--model", default="similarity", choices=("translation", "similarity"))
    cmd.add_argument("--frame", default="sem", help="name of the reference frame in the mapper (default sem)")
    cmd = sub.add_parser("particles", parents=[common], help="detect particles and print the table",
                         description="Runs smart_find_particles through the Door on IMAGE (default: the "
                                     "registered reference) and prints ParticleDS's table.")
    cmd.add_argument("image", nargs="?", default=None, help="image to detect on (default: registered reference)")
    cmd.add_argument("--set", dest="settings", action="append", default=[], metavar="NAME=VALUE",
                     help="write a ParticleDS setting first (memorized), e.g. --set Diameter=7")
    cmd.add_argument("--show", action="store_true", help="only print the current results, detect nothing")
    cmd.add_argument("--profile", default=None, metavar="NAME",
                     help="apply a named settings profile first (smart_particle_profile NAME), e.g. ceo2_50nm")
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
    cmd = sub.add_parser("beam", parents=[common], help="show, set or calibrate the beam's camera pixel",
                         description="`smart beam` shows BeamPosition; `smart beam set X Y` (or `set center`) "
                                     "runs smart_beam_set; `smart beam calibrate [INDEX]` runs smart_beam_calibrate "
                                     "(an X-ray map of a particle) through the Door.")
    cmd.add_argument("action", nargs="?", default="show", choices=("show", "set", "calibrate"))
    cmd.add_argument("values", nargs="*", help="set: X Y (px) or center; calibrate: particle INDEX (optional)")
    cmd.add_argument("--search-um", type=float, default=1.0, help="calibrate: half width of the search map (um)")
    cmd.add_argument("--exposure", type=float, default=0.01, help="calibrate: integration time per point (s)")
    from clients import queue_cli

    queue_cli.add_parser(sub, common)


def _run_device_command(args: argparse.Namespace) -> dict:
    from clients.commands import DEFAULT_DOOR, CommandError, SmartClient, parse_setting, resolve_tango_host

    client = SmartClient(resolve_tango_host(args.tango_host), door=args.door or DEFAULT_DOOR)
    try:
        if args.command == "register":
            return client.register(args.reference_image, args.model, args.frame, args.channel)
        if args.command == "particles":
            settings = dict(parse_setting(text) for text in args.settings)
            return client.particles(args.image, settings, detect=not args.show, profile=args.profile)
        if args.command == "map":
            return client.map(args.frame_from, args.frame_to, [[args.x, args.y]], args.stage_position)
        if args.command == "beam":
            return client.beam(args.action, args.values, args.search_um, args.exposure)
        if args.command == "queue":
            from clients import queue_cli

            return queue_cli.run(client, args)
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
        table = particle_table(result)
        return (f"particle profile '{result['profile']}' applied\n" + table) if result.get("profile") else table
    if command == "map":
        return map_summary(result)
    if command == "queue":
        from clients import queue_cli

        return queue_cli.summary(result)
    if command == "beam":
        beam = result["beam_position"]
        where = "not set" if beam is None else f"camera pixel ({beam[0]:.2f}, {beam[1]:.2f})"
        return "\n".join([*result.get("output", []), f"beam position: {where}"])
    pos, unit = result["stage_position"], result.get("unit", "")
    digits = UNIT_DECIMALS.get(unit, 6)
    return f"{result['macro']}: stage at " + ", ".join(
        f"{name} {value:.{digits}f} {unit}" for name, value in zip(result["motors"], pos, strict=True))


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


UNIT_DECIMALS = {"mm": 6, "um": 3, "nm": 0, "px": 2}


def map_summary(result: dict) -> str:
    """One mapped point with its unit, sensible digits, its uncertainty and what the limits say.
    Never "within" unless the mapper said so; its warnings say why not (e.g. unknown limits)."""
    (x, y), = result["points"]
    unit = result.get("unit", "")
    digits = UNIT_DECIMALS.get(unit, 4)
    sigma = (result.get("uncertainty") or [None])[0]
    sigma_text = ("exact fit, so no uncertainty estimate" if sigma is None
                  else f"1-sigma {sigma:.{digits}f} {unit}")
    text = f"{x:.{digits}f} {y:.{digits}f} {unit}, {sigma_text}"
    if result.get("to") == "stage" or result.get("from") == "stage":
        inside = result.get("within_limits", [False])[0]
        text += ("; within the stage limits" if inside
                 else "; NOT within the stage limits: smart goto refuses it")
    warnings = result.get("warnings") or []
    return "\n".join([text, *(f"  warning: {w}" for w in warnings if "uncertainty is null" not in w)])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "report":
        return _report(args)
    if args.command in DEVICE_COMMANDS:
        from clients.commands import CommandError

        try:
            result = _run_device_command(args)
        except CommandError as exc:
            print(f"smart {args.command}: {exc.one_line()}", file=sys.stderr)
            return 1
        print(json.dumps(result) if args.json else _summary(args.command, result))
        return 0
    if args.command == "config":
        return _run_config_command(args)
    try:
        if args.command == "up":
            Stack(args.run_dir, args.config, facility=args.facility, port=args.port,
                  beamline=args.beamline, seed=args.seed, sem_image=not args.facility,
                  dsconfig=args.dsconfig, starter=args.starter, listen=args.listen).up()
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
