"""Building the sim source from the CameraDS device properties.

The renderer of the virtual beamline belongs to the simulation package, and no server
imports the simulation (docs/architecture.md): CameraDS looks the renderer factory up by
its name, ``module:function`` (the ``SimRenderer`` property, :data:`SIM_RENDERER` by
default, i.e. :func:`simulation.camera_plugin.build_renderer`). A facility without the
simulation still runs every other source, and any factory with the same keyword arguments
(``beamline``, ``sample``, ``seed``, ``zoom``, ``noise``) can stand in.

What the simulation's factory builds (one beamline bundle ``SimBeamline``, or a bare
``SimSample``, or just ``SimSeed``) is described in :mod:`simulation.camera_plugin` and
docs/camera.md.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from servers.CameraDS.sources import SimSource, StageReader
from servers.common.errors import BadArgument, NotFound

SIM_RENDERER = "simulation.camera_plugin:build_renderer"
"""``module:function`` that builds the sim camera's renderer from the ``Sim*`` properties."""


@dataclass(frozen=True)
class SimProperties:
    """The sim-only device properties (see docs/camera.md)."""

    beamline: str = ""
    sample: str = ""
    seed: int = 1
    zoom: str = ""
    noise: bool = True
    renderer: str = SIM_RENDERER


def renderer_factory(name: str = SIM_RENDERER) -> Callable[..., Any]:
    """The renderer factory called ``module:function`` (imported on first use)."""
    module_name, sep, function = name.strip().partition(":")
    if not sep or not module_name or not function:
        raise BadArgument(f"SimRenderer {name!r} must be module:function, e.g. {SIM_RENDERER}")
    try:
        factory = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError) as exc:
        raise NotFound(f"the sim camera's renderer {name} cannot be loaded ({type(exc).__name__}: {exc}); "
                       "install the simulation package, fix SimRenderer, or choose another Source") from None
    if not callable(factory):
        raise BadArgument(f"SimRenderer {name} is not a function")
    return factory


def build_sim_source(spec: str, props: SimProperties, stage: StageReader,
                     zoom_reader: Callable[[], str | None] | None = None) -> SimSource:
    renderer = renderer_factory(props.renderer)(beamline=props.beamline, sample=props.sample, seed=props.seed,
                                                zoom=props.zoom, noise=props.noise)
    return SimSource(spec, renderer, stage, zoom=props.zoom or None, zoom_reader=zoom_reader)
