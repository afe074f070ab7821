"""The sim camera's renderer is found by name (servers/CameraDS/simbuild.py): CameraDS imports no simulation."""

from __future__ import annotations

import pytest

from servers.CameraDS.simbuild import SIM_RENDERER, renderer_factory
from servers.common.errors import BadArgument, NotFound
from simulation.camera_plugin import build_renderer


def test_the_default_name_is_the_simulations_factory() -> None:
    assert renderer_factory() is build_renderer
    assert renderer_factory(f"  {SIM_RENDERER} ") is build_renderer


@pytest.mark.parametrize("name", ["simulation.camera_plugin", "simulation.camera_plugin:", ":build_renderer", ""])
def test_a_name_that_is_not_module_function_is_refused(name: str) -> None:
    with pytest.raises(BadArgument, match="must be module:function"):
        renderer_factory(name)


@pytest.mark.parametrize("name", ["no_such_package.renderer:build", "simulation.camera_plugin:no_such_function"])
def test_a_name_that_cannot_be_loaded_says_what_to_do(name: str) -> None:
    with pytest.raises(NotFound, match="cannot be loaded.*SimRenderer"):
        renderer_factory(name)


def test_a_name_that_is_no_function_is_refused() -> None:
    with pytest.raises(BadArgument, match="is not a function"):
        renderer_factory("servers.CameraDS.simbuild:SIM_RENDERER")


def test_an_unknown_zoom_is_refused_by_the_plugin() -> None:
    with pytest.raises(BadArgument, match="SimZoom 'huge' is not a zoom level"):
        build_renderer(seed=3, zoom="huge")
