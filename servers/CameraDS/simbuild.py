"""Building the sim source from the CameraDS device properties.

The camera must show the same virtual sample, mounting and optics as the rest of the
simulation (the XRF counter, the scorer), so the normal configuration is one beamline
bundle (``SimBeamline``, the JSON that ``simulation.config`` writes). For quick set-ups a
bare sample JSON (``SimSample``) or just a seed (``SimSeed``: a generated sample with the
documented random mounting of :func:`simulation.config.default_beamline`) also work.
Frames show the sample where the night's drift has moved it at the simulated time of the
frame (the beamline file's ``clock``), through the file's imperfect optical path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from servers.CameraDS.sources import SimSource, StageReader
from servers.common.errors import BadArgument


@dataclass(frozen=True)
class SimProperties:
    """The sim-only device properties (see docs/camera.md)."""

    beamline: str = ""
    sample: str = ""
    seed: int = 1
    zoom: str = ""
    noise: bool = True


def build_sim_source(spec: str, props: SimProperties, stage: StageReader,
                     zoom_reader: Callable[[], str | None] | None = None) -> SimSource:
    from simulation.camera import CameraRenderer
    from simulation.clock import SimClock
    from simulation.config import default_beamline, load_beamline
    from simulation.drift import Timelines
    from simulation.sample import load_sample

    if props.beamline:
        beamline = load_beamline(props.beamline)
    elif props.sample:
        beamline = default_beamline(props.seed, sample=load_sample(props.sample))
    else:
        beamline = default_beamline(props.seed)
    if props.zoom and props.zoom not in beamline.camera.zooms:
        raise BadArgument(f"SimZoom {props.zoom!r} is not a zoom level of the beamline; use one of "
                          f"{', '.join(sorted(beamline.camera.zooms))}")
    # the night's sample drift at the simulated time of each frame, and the optical path
    timelines, clock = Timelines(beamline), SimClock.from_beamline(beamline)
    renderer = CameraRenderer(beamline.sample, beamline.mounting, beamline.camera, seed=beamline.seed,
                              path=beamline.optical_path,
                              drift=lambda: timelines.camera_shift_mm(clock.now_s()))
    if not props.noise:
        render = renderer.render
        renderer.render = lambda *a, **k: render(*a, **{**k, "noise": False})  # type: ignore[method-assign]
    return SimSource(spec, renderer, stage, zoom=props.zoom or None, zoom_reader=zoom_reader)
