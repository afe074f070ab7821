"""`make demo`: the correlative workflow on the virtual beamline, from SEM image to X-ray scans.

Generates a sample and its SEM image, brings the stack up, runs calibrate -> register ->
find particles -> fine alignment -> a mesh on every isolated particle through the Door,
scores every target against the simulation's truth, draws the figures and shuts
everything down. Whatever happens in between, every process it started is stopped.

Results go to ``run/demo/``: sample.json, beamline.json, truth.json, sem.tif, visits.csv,
summary.json, sem_particles.png, camera_registration.png, xrf_maps.png; the stack's
logs to ``run/demo/stack/logs/``.
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

from clients.door import MacroFailed
from clients.launcher import DEFAULT_CONFIG, REPO, LaunchError, Stack
from clients.workflow import WorkflowOptions, prepare_inputs, run_workflow, score, summary_table

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
    parser.add_argument("--quiet", action="store_true", help="do not echo the Door's output")
    return parser.parse_args(argv)


def draw_figures(out_dir: Path, tango_host: str, summary: dict, sem_path: Path) -> None:
    import numpy as np
    import tango
    import tifffile

    from clients import figures

    def proxy(name: str) -> tango.DeviceProxy:
        return tango.DeviceProxy(f"tango://{tango_host}/{name}")

    particles = proxy("smart/particles/1")
    sem = tifffile.imread(sem_path)
    figures.sem_with_particles(sem, np.asarray(particles.X), np.asarray(particles.Y),
                               np.asarray(particles.Isolated), [r["index"] for r in summary["particles"]],
                               out_dir / "sem_particles.png")
    camera, mapper = proxy("smart/camera/1"), proxy("smart/coordmapper/1")
    camera.Snap()
    image, metadata = (a.value for a in camera.read_attributes(["Image", "FrameMetadata"]))
    stage = json.loads(metadata)["stage"]
    # the SEM outline in *this* frame: the mapper carries it over from the registration's frame
    h, w = sem.shape
    corners = [[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]]
    mapped = json.loads(mapper.Map(json.dumps({"from": "sem", "to": "camera", "points": corners,
                                               "stage_position": [stage["samx"], stage["samy"]]})))
    beam = list(mapper.BeamPosition)
    figures.camera_with_outline(np.asarray(image), np.array(mapped["points"]), (beam[0], beam[1]),
                                out_dir / "camera_registration.png")
    figures.xrf_maps(out_dir / "maps", summary["particles"], out_dir / "xrf_maps.png")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 1_000_000)
    out_dir = args.run_dir.resolve()
    options = WorkflowOptions(particles=args.particles, fine_particles=args.fine_particles)
    print(f"SMART demo: seed {seed}, {args.particles} particles, results in {out_dir}")
    inputs = prepare_inputs(out_dir, seed)
    print(f"sample, beamline, truth and SEM image written ({inputs.sem})")
    stack = Stack(out_dir / "stack", args.config, beamline=inputs.beamline)
    echo = None if args.quiet else (lambda stream, line: print(f"  [{stream}] {line}", flush=True))
    started = time.monotonic()
    try:
        os.environ["TANGO_HOST"] = stack.up()
        timings = run_workflow(stack.tango_host, inputs, out_dir, options, echo)
        summary = score(out_dir, inputs)
        summary.update(seed=seed, options=asdict(options), timings_s=timings,
                       total_s=time.monotonic() - started)
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
        print()
        print(summary_table(summary))
        draw_figures(out_dir, stack.tango_host, summary, inputs.sem)
        print(f"\nfigures: {out_dir / 'sem_particles.png'}, {out_dir / 'camera_registration.png'}, "
              f"{out_dir / 'xrf_maps.png'}")
    except (LaunchError, MacroFailed) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.down()
    print(f"demo finished in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
