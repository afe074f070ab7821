"""The LImA ``VIDEO_IMAGE`` format (``DevEncoded``), as taurus' VideoImageCodec reads it. Free of Tango.

A 32-byte big-endian header (magic ``VDEO``, version, mode, frame number, width, height,
endianness, header size, padding) followed by the pixels. CameraDS decodes grey video
modes from LimaCCDs; ParticleDS encodes its colour annotated image as RGB24 for Taurus.
"""

from __future__ import annotations

import struct

import numpy as np

__all__ = ["LIMA_HEADER", "LIMA_MAGIC", "LIMA_MODE_RGB24", "LIMA_MODES", "encode_rgb24"]

LIMA_MAGIC = 0x5644454F  # "VDEO"
LIMA_HEADER = struct.Struct("!IHHqiiHHHH")  # magic, version, mode, frame, width, height, endian, size, pad
LIMA_MODES = {0: np.uint8, 1: np.uint16, 2: np.uint32}  # Y8, Y16, Y32: the grey modes
LIMA_MODE_RGB24 = 6


def encode_rgb24(rgb: np.ndarray) -> bytes:
    """An (h, w, 3) uint8 RGB image as a LImA VIDEO_IMAGE RGB24 payload.

    The pixel bytes are stored B, G, R: that is the order taurus' VideoImageCodec (the
    decoder Taurus panels use) unpacks into R, G, B, so colours reach the panel unswapped.
    """
    height, width = rgb.shape[:2]
    header = LIMA_HEADER.pack(LIMA_MAGIC, 1, LIMA_MODE_RGB24, -1, width, height, 0 if np.little_endian else 1,
                              LIMA_HEADER.size, 0, 0)
    return header + np.ascontiguousarray(rgb[:, :, ::-1]).tobytes()
