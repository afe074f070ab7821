"""`make demo`: the correlative workflow on the virtual beamline, from SEM image to X-ray scans.

Generates a sample and its SEM image, brings the stack up, runs calibrate -> register ->
find particles -> fine alignment -> a mesh on every isolated particle through the Door,
scores every target against the simulation's truth, draws the figures and shuts
everything down. Whatever happens in between, every process it started is stopped.

Results go to ``run/demo/``: sample.json, beamline.json, truth.json, sem.tif, visits.csv,
summary.json, sem_particles.png, camera_registration.png, xrf_maps.png, scans/scans.h5 (every
Sardana scan, each particle's map with its index, reference position and target),
smart_events.jsonl, report.html (the morning report); the stack's logs to
``run/demo/stack/logs/``.

Output: by default one line per step and per scanned particle (elapsed, time left);
``--verbose`` adds everything the launcher and the Door print, ``--quiet`` leaves only
errors and the final summary.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from dataclasses import asdict
from pathlib import Path

from clients.display import duration
from clients.door import MacroFailed
from clients.launcher import DEFAULT_CONFIG, REPO, LaunchError, Stack, ended_like_ctrl_c
from clients.workflow import Inputs, WorkflowOptions, prepare_inputs, run_workflow, score, summary_table

DEMO_DIR = REPO / "run" / "demo"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make demo ARGS=...", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=None, help="sample and mounting seed (default: a fresh one)")
    parser.add_argument("--particles", type=int, default=20, help="isolated particles to scan (default 20)")
    parser.add_argument("--fine-particles", type=int, default=4,
                        help="particles mapped for the fine alignment (default 4)")
    parser.add_argument("--run-dir", type=Path, default=DEMO_DIR, help="where inputs, results and logs go")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="stack configuration YAML")
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("--verbose", action="store_true",
                          help="everything the launcher and the Door say (every scan row, as in Spock)")
    loudness.add_argument("--quiet", action="store_true", help="only errors and the final summary")
    return parser.parse_args(argv)


class Console:
    """What the demo prints at each verbosity.

    default: one line per step and per scanned particle (with elapsed and time left), the
    Door's errors and warnings (each text once), the summary; ``--verbose``: also every line
    the launcher and the Door print (thousands: every mesh row); ``--quiet``: errors and the
    summary only."""

    def __init__(self, verbose: bool = False, quiet: bool = False) -> None:
        self.verbose, self.quiet = verbose, quiet
        self.warned: set[str] = set()

    def say(self, line: str) -> None:
        """A progress line of the middle level (also shown with --verbose)."""
        if not self.quiet:
            print(line, flush=True)

    def door(self, stream: str, line: str) -> None:
        """A line the Door said: all with --verbose, warnings and errors by default, errors when quiet."""
        if stream == "Warning" and not self.verbose:
            if self.quiet or line in self.warned:
                return  # the same warning for every scan of a loop says nothing new
            self.warned.add(line)
        if self.verbose or stream in ("Error", "Warning"):
            print(f"  [{stream}] {line}", flush=True)


def draw_figures(out_dir: Path, tango_host: str, summary: dict, sem_path: Path) -> list[Path]:
    """The three figures of a run, from the devices' final state and the saved maps."""
    import numpy as np
    import tango
    import tifffile

    from clients import figures
    from clients.display import um_per_unit
    from macros.smart_support import stage_of_frame

    def proxy(name: str) -> tango.DeviceProxy:
        return tango.DeviceProxy(f"tango://{tango_host}/{name}")

    particles = proxy("smart/particles/1")
    with tifffile.TiffFile(sem_path) as tif:
        sem = tif.pages[0].asarray()
        sem_pixel_um = float(json.loads(tif.pages[0].description)["pixel_size_um"])
    written = [figures.save(figures.sem_particles_figure(
        sem, sem_pixel_um, np.asarray(particles.X), np.asarray(particles.Y), np.asarray(particles.Isolated),
        [r["index"] for r in summary["particles"]]), out_dir / "sem_particles.png")]
    camera, mapper = proxy("smart/camera/1"), proxy("smart/coordmapper/1")
    camera.Snap()
    image, metadata, pixel_um = (a.value for a in camera.read_attributes(["Image", "FrameMetadata", "PixelSize"]))
    props = mapper.get_property(["MotorX", "MotorY"])
    motors = [list(props[key])[0] for key in ("MotorX", "MotorY")]
    stage = stage_of_frame(json.loads(metadata)["stage"], motors)
    # SEM px -> this frame's camera px: the mapper carries the registration over to where the stage is now
    mapped = json.loads(mapper.Map(json.dumps({"from": "sem", "to": "camera", "points": [[0.0, 0.0]],
                                               "stage_position": stage})))
    beam = list(mapper.BeamPosition)
    written.append(figures.save(figures.camera_registration_figure(
        np.asarray(image), float(pixel_um), sem, np.asarray(mapped["matrix"]), (beam[0], beam[1])),
        out_dir / "camera_registration.png"))
    records = {r["index"]: r for r in summary["particles"]}
    unit = str(mapper.read_attribute("StageUnit").value or "mm")
    maps = [(index, data) for index, data in figures.load_maps(out_dir / "scans", limit=10_000) if index in records]
    written.append(figures.save(figures.xrf_maps_figure(maps[:20], records, um_per_unit(unit)),
                                out_dir / "xrf_maps.png"))
    return [path for path in written if path is not None]


def main(argv: list[str] | None = None) -> int:
    with ended_like_ctrl_c():  # a killed demo takes its stack down too
        return run_demo(parse_args(argv))


def run_demo(args: argparse.Namespace) -> int:
    begun = time.monotonic()
    console = Console(verbose=args.verbose, quiet=args.quiet)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 1_000_000)
    out_dir = args.run_dir.resolve()
    options = WorkflowOptions(particles=args.particles, fine_particles=args.fine_particles)
    console.say(f"SMART demo: seed {seed}, {args.particles} particles to scan, results in {out_dir}")
    inputs = prepare_inputs(out_dir, seed)
    console.say(describe_inputs(inputs))
    stack = Stack(out_dir / "stack", args.config, beamline=inputs.beamline, echo=args.verbose)
    started = time.monotonic()
    try:
        os.environ["TANGO_HOST"] = stack.up()
        if not args.verbose:  # --verbose has the launcher's own report (TANGO_HOST, every device's State)
            console.say(describe_stack(stack, time.monotonic() - started))
        timings = run_workflow(stack.tango_host, inputs, out_dir, options, console.door, console.say)
        summary = score(out_dir, inputs)
        summary.update(seed=seed, options=asdict(options), timings_s=timings,
                       total_s=time.monotonic() - begun)
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
        print()
        print(summary_table(summary), flush=True)
        drawn = draw_figures(out_dir, stack.tango_host, summary, inputs.sem)
        console.say("\nfigures: " + "\n         ".join(str(path) for path in drawn))
        from clients.report import write_report

        console.say(f"morning report: {write_report(out_dir, title=f'SMART demo night, seed {seed}')} "
                    f"(data: {out_dir / 'scans'})")
    except (LaunchError, MacroFailed) as exc:
        print(f"demo failed: {exc}\n(logs of every server in {stack.log_dir})", file=sys.stderr)
        return 1
    finally:
        stack.down(quiet=not args.verbose)
    console.say(f"demo finished in {duration(time.monotonic() - begun)} (stack up to down "
                f"{duration(time.monotonic() - started)})")
    return 0


def describe_inputs(inputs: Inputs) -> str:
    """What was generated, in one line: the sample's content and the SEM image's size and pixel."""
    import tifffile

    sample = json.loads(inputs.sample.read_text())
    with tifffile.TiffFile(inputs.sem) as tif:
        height, width = tif.pages[0].shape[:2]
        pixel_um = float(json.loads(tif.pages[0].description).get("pixel_size_um", float("nan")))
    return (f"sample: {len(sample.get('particles', []))} particles, {len(sample.get('markers', []))} Pt markers; "
            f"SEM image {inputs.sem.name}: {width} x {height} px at {pixel_um * 1000:.3g} nm/px")


def describe_stack(stack: Stack, elapsed_s: float) -> str:
    """The stack in one line: where its database is (TANGO_HOST, said once), how its devices are."""
    try:
        states = json.loads(stack.state_file.read_text()).get("states_after_up", {})
    except (OSError, ValueError):
        states = {}
    counts: dict[str, int] = {}
    for state in states.values():
        counts[state] = counts.get(state, 0) + 1
    said = (f"all {next(iter(counts))}" if len(counts) == 1
            else ", ".join(f"{n} {state}" for state, n in sorted(counts.items())))
    return (f"stack up in {duration(elapsed_s)}: TANGO_HOST={stack.tango_host}, {len(states)} SMART devices "
            f"{said}, Sardana answering; logs in {stack.log_dir}")


if __name__ == "__main__":
    raise SystemExit(main())
