"""Small stand-in devices the device tests serve beside (or instead of) our servers.

They live in an importable module of their own so that :mod:`tests.serve_devices` can run
them in a fresh server process (:func:`tests.device_server.serve_devices`).
"""

from __future__ import annotations

import json
import time

import numpy as np
import tango
import tifffile
from skimage import data
from tango import DevState
from tango.server import Device, attribute, command

from servers.CoordMapperDS.device import CoordMapperDS
from tests.unit.particles.synthetic import render_spots

SPOTS_LAYOUT = np.array([[40.0, 40.0], [200.0, 60.0], [120.0, 150.0], [128.0, 152.0], [60.0, 200.0],
                         [215.0, 215.0]])
"""Four lone spots and one close pair (8 px apart): 6 particles, 4 isolated."""
SPOTS = render_spots((256, 256), SPOTS_LAYOUT, sigma=1.5, peak=150, background=20, noise=3, seed=2)
"""The image :class:`SpotsCamera` serves (x10, as uint16) until told to load another."""


class GrabbableCamera(Device):
    """Just enough of a CameraDS for GrabImage, with switches for the ways a camera misbehaves.

    Frame ``n`` is the base image shifted right by ``n`` px, so a registration of a grabbed
    frame against the base proves which frame's pixels were stored. With ``mismatch`` > 0 a
    new frame "arrives" between reading FrameNumber and Image, ``mismatch`` times.
    """

    def init_device(self) -> None:
        super().init_device()
        self._base = (data.camera().astype(np.uint16) * 200)[:, :384]
        self._number = 7
        self._mismatch = 0
        self._pixel_size: float | None = 0.5
        self._no_frame = False
        self._reads = 0
        self._delay_s = 0.0
        self.set_state(DevState.ON)

    @command(dtype_in=str)
    def Configure(self, argin: str) -> None:
        settings = json.loads(argin)
        self._mismatch = settings.get("mismatch", self._mismatch)
        self._pixel_size = settings.get("pixel_size_um", self._pixel_size)
        self._no_frame = settings.get("no_frame", self._no_frame)
        self._number = settings.get("number", self._number)
        self._delay_s = settings.get("delay_s", self._delay_s)

    @attribute(dtype=int)
    def Reads(self) -> int:
        return self._reads

    @attribute(dtype="int64")
    def FrameNumber(self) -> int:
        self._reads += 1
        return self._number

    @attribute(dtype=((np.uint16,),), max_dim_x=4096, max_dim_y=4096)
    def Image(self) -> np.ndarray:
        if self._no_frame:
            tango.Except.throw_exception("SMART_NotReady", "no frame yet; Snap or Start", "FakeCamera")
        time.sleep(self._delay_s)
        if self._mismatch > 0:
            self._mismatch -= 1
            self._number += 1
        return np.roll(self._base, self._number, axis=1)

    @attribute(dtype=str)
    def FrameMetadata(self) -> str:
        return json.dumps({"frame_number": self._number, "timestamp": 1.5, "exposure_ms": 10.0,
                           "pixel_size_um": self._pixel_size, "stage": {"samx": 1.25, "samy": -0.5}})


class SpotsCamera(Device):
    """Stands in for CameraDS: an image attribute, a scalar, and a read that fails like a camera."""

    def init_device(self) -> None:
        super().init_device()
        self._image = SPOTS.astype(np.uint16) * 10
        self.set_state(DevState.ON)

    @attribute(dtype=((np.uint16,),), max_dim_x=4096, max_dim_y=4096)
    def Image(self) -> np.ndarray:
        return self._image

    @attribute(dtype=float)
    def Temperature(self) -> float:
        return 21.5

    @attribute(dtype=((np.uint16,),), max_dim_x=4096, max_dim_y=4096)
    def NoFrame(self) -> np.ndarray:
        tango.Except.throw_exception("SMART_NotReady", "there is no frame yet; Start the camera or Snap",
                                     "FakeCamera.NoFrame")

    @command(dtype_in=str)
    def LoadImage(self, path: str) -> None:
        self._image = tifffile.imread(path)


class ImageServer(Device):
    """A stand-in for another camera device (e.g. LimaCCDs): ``Image`` pushes change
    events when ``Push`` is called; ``Plain`` (uint8) has no events, so it must be polled."""

    def init_device(self) -> None:
        super().init_device()
        self._value = 0
        self.set_change_event("Image", True, False)

    @attribute(dtype=((np.uint16,),), max_dim_x=256, max_dim_y=256)
    def Image(self) -> np.ndarray:
        return np.full((20, 30), self._value, np.uint16)

    @attribute(dtype=((np.uint8,),), max_dim_x=256, max_dim_y=256)
    def Plain(self) -> np.ndarray:
        return np.full((10, 12), 7, np.uint8)

    @command(dtype_in=int)
    def Push(self, value: int) -> None:
        self._value = value
        self.push_change_event("Image", np.full((20, 30), value, np.uint16))


class UnsavableCoordMapper(CoordMapperDS):
    """CoordMapperDS whose database is read-only: every write of the graph fails."""

    def _persist(self, text: str) -> None:
        tango.Except.throw_exception("DB_SQLError", "the database is read-only", "UnsavableCoordMapper")


class NeverReadyDevice(Device):
    """A device whose initialisation never ends, as a server stuck at start-up."""

    def init_device(self) -> None:
        super().init_device()
        while True:
            time.sleep(1.0)
