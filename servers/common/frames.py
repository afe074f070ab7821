"""The two frame names every CoordMapperDS has, whatever it stores (docs/coordmapper.md).

Part of the public interface: macros, the queue and clients name these frames in ``Map``
calls and queue targets. Defined once, here, because QueueDS must know them without
importing CoordMapperDS (no server imports another server).
"""

from __future__ import annotations

__all__ = ["ALWAYS_THERE", "CAMERA", "STAGE"]

STAGE = "stage"
"""The frame of the stage motors (their positions, in the motors' unit); cannot be removed."""
CAMERA = "camera"
"""The frame of the camera image (px); its edge to the stage is valid at one stage position."""
ALWAYS_THERE = (STAGE, CAMERA)
"""Frames that exist in every CoordMapperDS."""
