"""The whole mapper state as one JSON string, and back, refusing anything malformed.

The device keeps this string in a Tango database property, so the graph survives a
restart. The text may have been edited by hand or written by an older version, so loading
re-checks everything the commands check (finite, affine, well-conditioned matrices, PSD
covariances, known frames, units) and either returns a complete state or raises
:class:`BadArgument` -- a half-loaded graph could send the stage somewhere wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from servers.common.errors import BadArgument
from servers.common.frames import CAMERA, STAGE
from servers.common.jsonargs import dumps, loads_object
from servers.CoordMapperDS.edges import Edge, check_position, edge_from_plain

FORMAT = "smart-coordmapper"
VERSION = 1
UNITS = ("mm", "um", "nm", "px")


@dataclass
class GraphState:
    """Everything the mapper knows; copied and swapped whole so a failed command changes nothing."""

    stage_unit: str
    units: dict[str, str] = field(default_factory=dict)
    edges: dict[tuple[str, str], Edge] = field(default_factory=dict)
    beam_position: tuple[float, float] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def empty(cls, stage_unit: str) -> GraphState:
        return cls(stage_unit, {STAGE: stage_unit, CAMERA: "px"})

    def copy(self) -> GraphState:
        return GraphState(self.stage_unit, dict(self.units), dict(self.edges), self.beam_position,
                          list(self.history))


def state_to_json(state: GraphState) -> str:
    """Serialise ``state`` (edges in a stable order, so equal states give equal text)."""
    return dumps({
        "format": FORMAT,
        "version": VERSION,
        "stage_unit": state.stage_unit,
        "frames": dict(sorted(state.units.items())),
        "edges": [state.edges[key].to_plain() for key in sorted(state.edges)],
        "beam_position": None if state.beam_position is None else list(state.beam_position),
        "history": state.history,
    })


def state_from_json(text: str, stage_unit: str) -> GraphState:
    """Parse and fully validate a stored state; ``stage_unit`` is what the motors use now."""
    data = loads_object(text, what="stored CoordMapper state")
    expected = {"format", "version", "stage_unit", "frames", "edges", "beam_position", "history"}
    if set(data) != expected:
        raise BadArgument(f"the stored state has keys {sorted(data)}, expected {sorted(expected)}; "
                          "it was not written by CoordMapperDS")
    if data["format"] != FORMAT or data["version"] != VERSION:
        raise BadArgument(f"the stored state is format {data['format']!r} version {data['version']!r}; "
                          f"this server reads {FORMAT!r} version {VERSION}")
    if data["stage_unit"] != stage_unit:
        raise BadArgument(f"the stored transforms are in stage unit '{data['stage_unit']}' but the motors "
                          f"now use '{stage_unit}'; recalibrate, or restore the motor units")
    units = data["frames"]
    if not isinstance(units, dict) or any(u not in UNITS for u in units.values()):
        raise BadArgument(f"stored frames must map names to one of {UNITS}")
    if units.get(STAGE) != stage_unit or units.get(CAMERA) != "px":
        raise BadArgument("the stored frames must include 'stage' in the stage unit and 'camera' in px")
    if not isinstance(data["edges"], list) or not isinstance(data["history"], list):
        raise BadArgument("stored 'edges' and 'history' must be lists")
    state = GraphState(stage_unit, dict(units))
    for plain in data["edges"]:
        edge = edge_from_plain(plain)
        check_edge_frames(edge, state.units)
        if edge.key in state.edges:
            raise BadArgument(f"two stored edges join {edge.key[0]} and {edge.key[1]}; keep one")
        state.edges[edge.key] = edge
    if data["beam_position"] is not None:
        state.beam_position = check_position(data["beam_position"], "stored beam_position")
    if not all(isinstance(entry, dict) for entry in data["history"]):
        raise BadArgument("each stored history entry must be a JSON object")
    state.history = json.loads(json.dumps(data["history"]))
    return state


def check_edge_frames(edge: Edge, units: dict[str, str]) -> None:
    """Structural rules of a stored edge (its frames exist; camera edges are well formed)."""
    for frame in (edge.source, edge.target):
        if frame not in units:
            raise BadArgument(f"a stored edge uses frame '{frame}', which has no unit in 'frames'")
    if edge.kind == "camera" and (edge.source, edge.target) != (CAMERA, STAGE):
        raise BadArgument("the camera calibration edge must be stored from 'camera' to 'stage'")
    touches_camera = CAMERA in (edge.source, edge.target)
    if edge.kind == "affine" and {edge.source, edge.target} == {CAMERA, STAGE}:
        raise BadArgument("camera <-> stage must be stored as the camera calibration, not a fixed matrix")
    if edge.kind == "affine" and touches_camera and edge.stage_position is None:
        raise BadArgument(f"the edge {edge.source} -> {edge.target} touches the moving camera frame but "
                          "has no stage_position")
    if edge.kind == "affine" and not touches_camera and edge.stage_position is not None:
        raise BadArgument(f"the edge {edge.source} -> {edge.target} has a stage_position but does not "
                          "touch the camera frame")
