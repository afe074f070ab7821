"""Paths through the frame graph and the chain of concrete transforms a Map applies.

The one subtlety is the moving ``camera`` frame. A camera pixel only means something
together with the stage position ``S`` at which that frame was taken, so "camera" is really
a family of frames camera@S. Along a path, each visit of ``camera`` therefore gets a stage
position from its neighbours:

* an edge between ``camera`` and another frame (a registration, say ``sem -> camera``)
  carries the ``S`` of the camera frame it was measured in;
* the calibration edge ``camera -> stage`` has no ``S`` of its own: it takes the visit's;
* at the start or end of the path, the ``stage_position`` of the Map call is used (else the
  other neighbour's, else the calibration edge's stored default).

When the two sides of a visit name *different* positions (``sem`` registered at S1, ``xrf``
at S2), the pixels belong to different camera frames and are related through the stage:
camera@S1 -> stage -> camera@S2, i.e. the calibration edge is used twice (forwards, then
backwards). That detour is inserted here, so that composition stays a plain product.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from servers.common.errors import NotFound, NotReady
from servers.common.frames import CAMERA, STAGE
from servers.CoordMapperDS.edges import Edge, edge_key


@dataclass(frozen=True)
class Step:
    """One edge applied in the direction of travel.

    ``matrix`` is the edge's concrete ``source -> target`` 3x3 and ``basis`` the Jacobian of
    its entries wrt the edge parameters; ``forward`` False means its inverse is applied.
    """

    edge: Edge
    forward: bool
    matrix: np.ndarray
    basis: np.ndarray
    stage_position: tuple[float, float] | None

    @property
    def applied(self) -> np.ndarray:
        """The 3x3 actually applied to the points."""
        return self.matrix if self.forward else np.linalg.inv(self.matrix)

    def describe(self) -> str:
        source, target = (self.edge.source, self.edge.target) if self.forward else (
            self.edge.target, self.edge.source)
        at = "" if self.stage_position is None else f"@{list(self.stage_position)}"
        return f"{source}{at if source == CAMERA else ''} -> {target}{at if target == CAMERA else ''}"


def find_path(edges: dict[tuple[str, str], Edge], start: str, goal: str) -> list[str]:
    """Fewest-edges path of frame names from ``start`` to ``goal`` (BFS, ties by name).

    Fewest edges, because every edge adds its own error; ties are broken by name so the
    same graph always answers the same way.
    """
    neighbours: dict[str, list[str]] = {}
    for first, second in edges:
        neighbours.setdefault(first, []).append(second)
        neighbours.setdefault(second, []).append(first)
    previous: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        frame = queue.popleft()
        if frame == goal:
            break
        for following in sorted(neighbours.get(frame, [])):
            if following not in previous:
                previous[following] = frame
                queue.append(following)
    if goal not in previous:
        reachable = sorted(f for f in previous if f != start)
        raise NotFound(f"no chain of transforms leads from '{start}' to '{goal}' (from '{start}' one can "
                       f"reach: {', '.join(reachable) or 'nothing'}); store a transform that links them "
                       "with SetTransform or FitTransform")
    path = [goal]
    while path[-1] != start:
        path.append(previous[path[-1]])  # type: ignore[arg-type]
    return path[::-1]


def _side_position(edge: Edge) -> tuple[float, float] | None:
    """Stage position a neighbouring edge imposes on the camera visit (None: takes the visit's)."""
    return None if edge.kind == "camera" else edge.stage_position


def build_chain(edges: dict[tuple[str, str], Edge], path: list[str],
                call_position: tuple[float, float] | None, beam: tuple[float, float] | None) -> list[Step]:
    """The steps that map points along ``path``, camera positions resolved (module doc)."""
    steps: list[Step] = []
    last = len(path) - 1
    for index in range(last):
        here, there = path[index], path[index + 1]
        if here == CAMERA:
            incoming, outgoing = _visit_positions(edges, path, index, call_position)
            if incoming != outgoing:
                calibration = _calibration(edges, "relate camera frames taken at different stage positions "
                                                  f"{list(incoming)} and {list(outgoing)}")
                steps.append(_step(calibration, True, incoming, beam))
                steps.append(_step(calibration, False, outgoing, beam))
            position = outgoing
        elif there == CAMERA:
            position = _visit_positions(edges, path, index + 1, call_position)[0]
        else:
            position = None
        edge = edges[edge_key(here, there)]
        steps.append(_step(edge, edge.source == here, position, beam))
    if last > 0 and path[last] == CAMERA:
        incoming, outgoing = _visit_positions(edges, path, last, call_position)
        if incoming != outgoing:  # the caller's camera frame is not the one the last edge knows
            calibration = _calibration(edges, "relate camera frames taken at different stage positions "
                                              f"{list(incoming)} and {list(outgoing)}")
            steps.append(_step(calibration, True, incoming, beam))
            steps.append(_step(calibration, False, outgoing, beam))
    return steps


def _visit_positions(edges: dict[tuple[str, str], Edge], path: list[str], index: int,
                     call_position: tuple[float, float] | None) -> tuple[tuple[float, float], tuple[float, float]]:
    """(incoming, outgoing) stage positions of the camera visit at ``path[index]``."""
    last = len(path) - 1
    incoming = call_position if index == 0 else _side_position(edges[edge_key(path[index - 1], CAMERA)])
    outgoing = call_position if index == last else _side_position(edges[edge_key(CAMERA, path[index + 1])])
    if incoming is None:
        incoming = outgoing
    if outgoing is None:
        outgoing = incoming
    if incoming is None or outgoing is None:
        calibration = _calibration(edges, "map camera pixels")
        if calibration.stage_position is None:
            raise NotReady("camera pixels need the stage position at which the camera frame was taken; "
                           "give \"stage_position\": [x, y] (motor units) in the Map call")
        incoming = outgoing = calibration.stage_position
    return incoming, outgoing


def _calibration(edges: dict[tuple[str, str], Edge], purpose: str) -> Edge:
    edge = edges.get(edge_key(CAMERA, STAGE))
    if edge is None:
        raise NotReady(f"the camera calibration (camera -> stage) is needed to {purpose}; run the "
                       "smart_calibrate_camera macro, CalibrateCamera, or FitTransform from camera to stage")
    return edge


def _step(edge: Edge, forward: bool, position: tuple[float, float] | None,
          beam: tuple[float, float] | None) -> Step:
    if edge.kind == "camera":
        if beam is None:
            raise NotReady("BeamPosition (camera px) is not set, so camera pixels cannot be turned into "
                           "stage positions; write the BeamPosition attribute")
        matrix, basis = edge.concrete(np.asarray(position, dtype=float), np.asarray(beam, dtype=float))
    else:
        matrix, basis = edge.concrete(None, None)
    return Step(edge, forward, matrix, basis, position if CAMERA in (edge.source, edge.target) else None)
