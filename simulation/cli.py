"""Command line of the virtual beamline.

    python -m simulation sample   --seed N -o sample.json
    python -m simulation beamline --seed N [--sample sample.json] [--night [--hours H]] -o beamline.json
                                  [--truth truth.json]
    python -m simulation sem      SAMPLE_OR_BEAMLINE -o sem.tif [--pixel-size UM] [--size W H] ...
    python -m simulation camera   SAMPLE_OR_BEAMLINE -o cam.tif [--stage X Y] [--zoom mid] [--frame N] ...
    python -m simulation xrf      SAMPLE_OR_BEAMLINE -o map.tif [--centre X Y] [--points NX NY] ...
    python -m simulation truth    BEAMLINE -o truth.json

Renderers accept a full beamline JSON or a bare sample JSON (then the mounting is zero and
every setting default). Truth never goes into an image's metadata: it is written only
where ``--truth`` asks for it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from servers.common.errors import SmartError
from simulation.camera import CameraRenderer
from simulation.config import VirtualBeamline, default_beamline, load_beamline, night_beamline
from simulation.generate import SampleRecipe, generate_sample
from simulation.geometry import apply
from simulation.mounting import sample_to_stage
from simulation.sample import load_sample
from simulation.sem import render_sem
from simulation.tiffio import write_tiff
from simulation.truth import write_truth
from simulation.xrf import XrfDetector


def _write_json(path: str, data: dict) -> None:
    Path(path).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def cmd_sample(args: argparse.Namespace) -> None:
    recipe = SampleRecipe(width=args.field[0], height=args.field[1], isolated=args.isolated,
                          small_clusters=args.clusters, agglomerates=args.agglomerates,
                          central_agglomerates=min(args.agglomerates, SampleRecipe.central_agglomerates))
    sample = generate_sample(args.seed, recipe)
    sample.save(args.output)
    print(f"{args.output}: {sample.count} particles, {len(sample.markers)} markers, "
          f"field {sample.width:g} x {sample.height:g} um")


def cmd_beamline(args: argparse.Namespace) -> None:
    sample = load_sample(args.sample) if args.sample else None
    if args.night:
        beamline = night_beamline(args.seed, sample, hours=args.hours)
    else:
        beamline = default_beamline(args.seed, sample)
    beamline.save(args.output)
    print(f"{args.output}: beamline seed {args.seed} (contains the truth: keep it away from the workflow)")
    if args.truth:
        write_truth(beamline, args.truth)
        print(f"{args.truth}: truth written")


def cmd_sem(args: argparse.Namespace) -> None:
    beamline = load_beamline(args.input)
    updates = {}
    if args.pixel_size is not None:
        updates["pixel_size_um"] = args.pixel_size
    if args.size is not None:
        updates["width"], updates["height"] = args.size
    if args.centre is not None:
        updates["centre_um"] = tuple(args.centre)
    if args.rotation is not None:
        updates["rotation_deg"] = args.rotation
    if args.no_noise:
        updates["noise"] = False
    geometry = type(beamline.sem).model_validate({**beamline.sem.model_dump(), **updates})
    sem = render_sem(beamline.sample, geometry, args.seed if args.seed is not None else beamline.seed)
    write_tiff(args.output, sem.image, sem.pixel_size_um, {"modality": "SEM", "source": "simulation"})
    print(f"{args.output}: SEM {geometry.width}x{geometry.height} px at {geometry.pixel_size_um} um/px")
    if args.truth:
        _write_json(args.truth, {"pixel_to_sample": sem.pixel_to_sample.tolist(),
                                 "pixel_size_um": sem.pixel_size_um, "geometry": geometry.model_dump(mode="json")})


def _stage_or_centre(beamline: VirtualBeamline, stage: list[float] | None) -> tuple[float, float]:
    if stage is not None:
        return (stage[0], stage[1])
    centre = apply(sample_to_stage(beamline.sample, beamline.mounting), np.asarray(beamline.sample.centre))
    return (float(centre[0]), float(centre[1]))


def cmd_camera(args: argparse.Namespace) -> None:
    beamline = load_beamline(args.input)
    optics = beamline.camera
    if args.size is not None or args.zoom is not None:
        updates = {"zoom": args.zoom or optics.zoom}
        if args.size is not None:
            updates["width"], updates["height"] = args.size
        optics = type(optics).model_validate_json(json.dumps({**optics.model_dump(mode="json"), **updates}))
    stage = _stage_or_centre(beamline, args.stage)
    renderer = CameraRenderer(beamline.sample, beamline.mounting, optics,
                              args.seed if args.seed is not None else beamline.seed, path=beamline.optical_path)
    image = renderer.render(stage, args.frame, exposure_ms=args.exposure_ms, noise=not args.no_noise)
    pixel = optics.zooms[optics.zoom].pixel_size_um
    write_tiff(args.output, image, pixel, {"modality": "camera", "frame_number": args.frame, "zoom": optics.zoom,
                                           "stage": {"x": stage[0], "y": stage[1]}, "bit_depth": 12,
                                           "exposure_ms": args.exposure_ms or optics.exposure_ms})
    print(f"{args.output}: camera frame {args.frame} at stage ({stage[0]:.6f}, {stage[1]:.6f}) mm, zoom {optics.zoom}")
    if args.truth:
        _write_json(args.truth, {"A_mm_per_px": renderer.calibration().tolist(), "beam_px": list(optics.beam()),
                                 "pixel_to_sample": renderer.pixel_to_sample(stage).tolist(),
                                 "stage_mm": list(stage)})


def cmd_xrf(args: argparse.Namespace) -> None:
    beamline = load_beamline(args.input)
    centre = _stage_or_centre(beamline, args.centre)
    nx, ny = args.points
    step = args.step_nm * 1e-6
    xs = centre[0] + (np.arange(nx) - (nx - 1) / 2.0) * step
    ys = centre[1] + (np.arange(ny) - (ny - 1) / 2.0) * step
    detector = XrfDetector(beamline.sample, beamline.mounting, beamline.xrf,
                           args.seed if args.seed is not None else beamline.seed)
    maps = detector.map(xs, ys, args.dwell_s)
    stack = np.stack([maps["Ce_L"], maps["Pt_L"]]).astype(np.uint32)
    write_tiff(args.output, stack, args.step_nm / 1000.0,
               {"modality": "XRF", "channels": ["Ce_L", "Pt_L"], "dwell_s": args.dwell_s,
                "x_mm": [float(xs[0]), float(xs[-1])], "y_mm": [float(ys[0]), float(ys[-1])]})
    print(f"{args.output}: XRF map {nx}x{ny} points, step {args.step_nm} nm, channels Ce_L, Pt_L")
    if args.json:
        _write_json(args.json, {"x_mm": xs.tolist(), "y_mm": ys.tolist(), "dwell_s": args.dwell_s,
                                "Ce_L": maps["Ce_L"].tolist(), "Pt_L": maps["Pt_L"].tolist()})


def cmd_truth(args: argparse.Namespace) -> None:
    write_truth(load_beamline(args.input), args.output)
    print(f"{args.output}: truth written")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m simulation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sample", help="generate a seeded sample JSON (units um)")
    p.add_argument("--seed", type=int, required=True, help="random seed; same seed, same sample")
    p.add_argument("-o", "--output", required=True, help="sample JSON to write")
    p.add_argument("--field", type=float, nargs=2, default=(500.0, 500.0), metavar=("W", "H"),
                   help="membrane field size in um (default 500 500)")
    p.add_argument("--isolated", type=int, default=SampleRecipe.isolated, help="isolated cubes (default %(default)s)")
    p.add_argument("--clusters", type=int, default=SampleRecipe.small_clusters,
                   help="small clusters of 2-8 cubes (default %(default)s)")
    p.add_argument("--agglomerates", type=int, default=SampleRecipe.agglomerates,
                   help="agglomerates of 0.4-1.5 um radius (default %(default)s)")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("beamline", help="a beamline bundle with random mounting errors (contains the truth)")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--sample", help="use this sample JSON instead of generating one from the seed")
    p.add_argument("--night", action="store_true",
                   help="night_beamline: drift, beam intensity, imperfect optics and SEM (docs/simulation.md)")
    p.add_argument("--hours", type=float, default=8.0, help="length of the night (with --night)")
    p.add_argument("-o", "--output", required=True, help="beamline JSON to write")
    p.add_argument("--truth", help="also write the truth JSON here")
    p.set_defaults(func=cmd_beamline)

    p = sub.add_parser("sem", help="render the lab SEM image (uint16 TIFF, pixel size in tags and JSON)")
    p.add_argument("input", help="sample or beamline JSON")
    p.add_argument("-o", "--output", required=True, help="TIFF to write")
    p.add_argument("--pixel-size", type=float, help="um per pixel (default 0.02)")
    p.add_argument("--size", type=int, nargs=2, metavar=("W", "H"), help="image size in pixels (default 4096 4096)")
    p.add_argument("--centre", type=float, nargs=2, metavar=("X", "Y"),
                   help="sample point (um) at the image centre (default: field centre)")
    p.add_argument("--rotation", type=float, help="scan rotation in degrees against the sample axes")
    p.add_argument("--seed", type=int, help="noise seed (default: the beamline seed)")
    p.add_argument("--no-noise", action="store_true", help="leave out the shot noise")
    p.add_argument("--truth", help="write the SEM pixel -> sample um matrix here")
    p.set_defaults(func=cmd_sem)

    p = sub.add_parser("camera", help="render an optical camera frame (uint16, 12-bit data)")
    p.add_argument("input", help="sample or beamline JSON")
    p.add_argument("-o", "--output", required=True, help="TIFF to write")
    p.add_argument("--stage", type=float, nargs=2, metavar=("X", "Y"),
                   help="motor positions in mm (default: the field centre in the beam)")
    p.add_argument("--zoom", help="zoom level: low (1.1 um/px), mid (0.55, default), high (0.275)")
    p.add_argument("--size", type=int, nargs=2, metavar=("W", "H"), help="frame size (default 2048 2048)")
    p.add_argument("--frame", type=int, default=0, help="frame index (selects the noise)")
    p.add_argument("--exposure-ms", type=float, help="exposure time in ms (default 20)")
    p.add_argument("--seed", type=int, help="noise seed (default: the beamline seed)")
    p.add_argument("--no-noise", action="store_true", help="leave out shot and read noise")
    p.add_argument("--truth", help="write the true calibration A and pixel -> sample matrix here")
    p.set_defaults(func=cmd_camera)

    p = sub.add_parser("xrf", help="render an XRF mesh-scan map (Ce-L, Pt-L counts)")
    p.add_argument("input", help="sample or beamline JSON")
    p.add_argument("-o", "--output", required=True, help="TIFF to write (2 pages of uint32 counts: Ce_L, Pt_L)")
    p.add_argument("--centre", type=float, nargs=2, metavar=("X", "Y"),
                   help="map centre as motor positions in mm (default: the field centre)")
    p.add_argument("--points", type=int, nargs=2, default=(101, 101), metavar=("NX", "NY"),
                   help="grid points (default 101 101)")
    p.add_argument("--step-nm", type=float, default=200.0, help="grid step in nm (default 200)")
    p.add_argument("--dwell-s", type=float, default=0.1, help="integration time per point in s (default 0.1)")
    p.add_argument("--seed", type=int, help="noise seed (default: the beamline seed)")
    p.add_argument("--json", help="also write the map as JSON here")
    p.set_defaults(func=cmd_xrf)

    p = sub.add_parser("truth", help="write the truth JSON of a beamline")
    p.add_argument("input", help="beamline JSON")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(func=cmd_truth)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except SmartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # pydantic ValidationError of an override
        print(f"error: SMART_BadArgument: {exc}", file=sys.stderr)
        return 2
    return 0
