"""Registering an image again keeps the regions registered into it and drops what tied them to
the beamline: replace_frame against the mapper's own core behind a stand-in proxy.

System tier because macros/smart_region_support.py calls the mapper through
macros/smart_calls.py, a Tango client (it imports tango); the mapper here is its own core behind
a stand-in proxy."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np

from macros.smart_region_support import descendants, replace_frame
from servers.common.jsonargs import parse_args
from servers.CoordMapperDS.args import MapArgs, SetTransformArgs
from servers.CoordMapperDS.core import CoordMapperCore


class MapperProxy:
    """The three calls replace_frame makes, answered by a CoordMapperCore."""

    def __init__(self, core: CoordMapperCore) -> None:
        self.core = core

    def dev_name(self) -> str:
        return "smart/coordmapper/test"

    def read_attribute(self, name: str) -> SimpleNamespace:
        assert name == "Transforms"
        return SimpleNamespace(value=self.core.transforms_json())

    def command_inout(self, command: str, text: str) -> str:
        if command == "RemoveFrame":
            return self.core.remove_frame(text).to_json()
        assert command == "SetTransform"
        return self.core.set_transform(parse_args(text, SetTransformArgs)).to_json()


def _set(core: CoordMapperCore, source: str, target: str, matrix, **extra) -> None:
    core.set_transform(parse_args(json.dumps({"from": source, "to": target, "matrix": matrix, **extra}),
                                  SetTransformArgs))


def _map(core: CoordMapperCore, source: str, target: str, point) -> list[float]:
    return list(core.map_points(parse_args(json.dumps({"from": source, "to": target, "points": [point]}),
                                           MapArgs)).points[0])


def test_regions_keep_their_registration_and_lose_their_alignments() -> None:
    core = CoordMapperCore()
    tile = [[0.1, 0.0, 500.0], [0.0, 0.1, 700.0], [0, 0, 1]]
    covariance = (np.eye(6) * 1e-6).tolist()
    _set(core, "tile1", "overview", tile, covariance=covariance)
    _set(core, "tile2", "overview", [[0.1, 0.0, 900.0], [0.0, 0.1, 700.0], [0, 0, 1]])
    _set(core, "sub", "tile1", [[0.5, 0.0, 10.0], [0.0, 0.5, 10.0], [0, 0, 1]])
    _set(core, "overview", "stage", [[-2e-4, 0, 1.0], [0, -2e-4, 1.0], [0, 0, 1]], to_unit="mm")
    _set(core, "tile1", "stage", [[-2e-5, 0, 0.9], [0, -2e-5, 0.86], [0, 0, 1]], to_unit="mm")  # a fine alignment
    edges = json.loads(core.transforms_json())["edges"]
    assert descendants(edges, "overview") == ["tile1", "tile2", "sub"]
    assert descendants(edges, "tile2") == []

    removed, kept = replace_frame(MapperProxy(core), "overview")

    assert kept == ["tile1", "tile2", "sub"]
    assert sorted(map(frozenset, removed), key=sorted) == [{"overview", "stage"}, {"stage", "tile1"}]
    after = {(e["from"], e["to"]): e for e in json.loads(core.transforms_json())["edges"]}
    assert set(after) == {("tile1", "overview"), ("tile2", "overview"), ("sub", "tile1")}
    assert after[("tile1", "overview")]["matrix"] == tile
    assert np.allclose(after[("tile1", "overview")]["covariance"], covariance)
    # the hierarchy still maps: sub -> tile1 -> overview
    assert np.allclose(_map(core, "sub", "overview", [0.0, 0.0]), [501.0, 701.0])


def test_a_region_registered_again_leaves_its_parent_alone() -> None:
    core = CoordMapperCore()
    _set(core, "tile1", "overview", [[0.1, 0.0, 500.0], [0.0, 0.1, 700.0], [0, 0, 1]])
    _set(core, "overview", "stage", [[-2e-4, 0, 1.0], [0, -2e-4, 1.0], [0, 0, 1]], to_unit="mm")
    removed, kept = replace_frame(MapperProxy(core), "tile1")
    assert kept == [] and [set(edge) for edge in removed] == [{"tile1", "overview"}]
    assert [(e["from"], e["to"]) for e in json.loads(core.transforms_json())["edges"]] == [("overview", "stage")]
