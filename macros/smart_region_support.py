"""Keeping a hierarchy of registered images consistent when one of them is registered again.

A region (a high-magnification SEM tile) is registered into its parent image (the overview)
as the mapper edge ``region -> parent``; that edge belongs to the two images and stays true
when the sample is remounted. What does not stay true is everything that ties them to the
beamline: the parent's ``-> camera`` registration and any fine alignment ``-> stage``. So
registering a frame again removes the frame and every region hanging from it (RemoveFrame:
all their edges), then stores the image-to-image edges among them again. It calls the mapper
through macros/smart_calls.py (a Tango client); tested against the mapper's own core.
"""

from __future__ import annotations

import json
from typing import Any

from macros.smart_calls import call_json

BEAMLINE_FRAMES = ("camera", "stage")


def descendants(edges: list[dict[str, Any]], frame: str) -> list[str]:
    """Frames registered into ``frame``, directly or through others (edges ``child -> parent``
    between image frames), nearest first."""
    found: list[str] = []
    parents = [frame]
    while parents:
        parent = parents.pop(0)
        for edge in edges:
            child = edge["from"]
            if (edge["to"] == parent and child not in BEAMLINE_FRAMES and child != frame
                    and child not in found):
                found.append(child)
                parents.append(child)
    return found


def replace_frame(mapper, frame: str) -> tuple[list[list[str]], list[str]]:
    """Remove ``frame`` and its descendants from the mapper, then store the descendants'
    image-to-image edges again. Returns (the edges removed and not stored again, as the
    mapper names them, [first, second]; the descendants kept)."""
    state = json.loads(mapper.read_attribute("Transforms").value or "{}")
    edges, units = state.get("edges", []), state.get("frames", {})
    children = descendants(edges, frame)
    family = {frame, *children}
    keep = [edge for edge in edges if edge["from"] in children and edge["to"] in family]
    removed: list[list[str]] = []
    for name in [frame, *children]:
        removed += [list(edge) for edge in call_json(mapper, "RemoveFrame", name).get("removed_edges", [])]
    for edge in keep:
        transform = {"from": edge["from"], "to": edge["to"], "matrix": edge["matrix"],
                     "from_unit": units.get(edge["from"], "px"), "to_unit": units.get(edge["to"], "px")}
        covariance = edge.get("covariance")
        if covariance is not None and any(value != 0 for row in covariance for value in row):
            transform["covariance"] = covariance
        call_json(mapper, "SetTransform", transform)
    kept = [{edge["from"], edge["to"]} for edge in keep]
    return [edge for edge in removed if set(edge) not in kept], children
