"""The simulated microscope camera as CameraDS's ``sim`` source renders it (the plug-in side).

CameraDS does not import the simulation: it looks this factory up by its name (the
``SimRenderer`` property, ``servers.CameraDS.simbuild.SIM_RENDERER`` by default), so the
servers stay free of the virtual beamline and any renderer with the same signature can
stand in.

The camera must show the same virtual sample, mounting and optics as the rest of the
simulation (the XRF counter, the scorer), so the normal configuration is one beamline
bundle (``beamline``: the JSON that :mod:`simulation.config` writes). For quick set-ups a
bare sample JSON (``sample``) or just a seed (a generated sample with the documented
random mounting of :func:`simulation.config.default_beamline`) also work.
Frames show the sample where the night's drift has moved it at the simulated time of the
frame (the beamline file's ``clock``), through the file's imperfect optical path.
"""

from __future__ import annotations

from servers.common.errors import BadArgument
from simulation.camera import CameraRenderer
from simulation.clock import SimClock
from simulation.config import default_beamline, load_beamline
from simulation.drift import Timelines
from simulation.sample import load_sample


def build_renderer(*, beamline: str = "", sample: str = "", seed: int = 1, zoom: str = "",
                   noise: bool = True) -> CameraRenderer:
    """The camera renderer of the beamline given by the CameraDS ``Sim*`` properties."""
    if beamline:
        config = load_beamline(beamline)
    elif sample:
        config = default_beamline(seed, sample=load_sample(sample))
    else:
        config = default_beamline(seed)
    if zoom and zoom not in config.camera.zooms:
        raise BadArgument(f"SimZoom {zoom!r} is not a zoom level of the beamline; use one of "
                          f"{', '.join(sorted(config.camera.zooms))}")
    # the night's sample drift at the simulated time of each frame, and the optical path
    timelines, clock = Timelines(config), SimClock.from_beamline(config)
    renderer = CameraRenderer(config.sample, config.mounting, config.camera, seed=config.seed,
                              path=config.optical_path,
                              drift=lambda: timelines.camera_shift_mm(clock.now_s()))
    if not noise:
        render = renderer.render
        renderer.render = lambda *a, **k: render(*a, **{**k, "noise": False})  # type: ignore[method-assign]
    return renderer
