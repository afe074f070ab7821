"""Where camera frames come from: one small interface, several implementations.

The acquisition thread (:mod:`servers.CameraDS.acquisition`) only ever calls
:meth:`Source.open`, :meth:`Source.read` and :meth:`Source.close`, so a USB camera, a
video file, another Tango device, a folder of TIFFs and the simulated microscope are
interchangeable. A source that fails raises :class:`SourceLost`; the thread then reports
FAULT and retries, so a source never has to handle recovery itself.

This module has no Tango import: the Tango-backed source and stage reader live in
:mod:`servers.CameraDS.tango_io` and are plugged in by :func:`make_source`'s caller.
"""

from __future__ import annotations

import contextlib
import glob as globmod
import math
import os
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from servers.common.errors import BadArgument, Failed, NotReady, SourceLost
from servers.common.grey import to_grey
from servers.common.lima import LIMA_HEADER, LIMA_MAGIC, LIMA_MODES
from servers.common.safefile import run_with_time_limit
from servers.common.tango_names import split_attribute_name

SOURCE_KINDS = ("sim", "opencv:<index or URL>", "tango:<device>/<attribute>", "files:<glob>")


@dataclass
class SourceFrame:
    """One frame as a source delivers it. ``stage`` is set when the source itself read the
    motors (the sim renders at that position, so it must stamp exactly those values);
    ``pixel_size_um`` when the source knows its own scale (the sim's zoom)."""

    data: np.ndarray
    stage: dict[str, float | None] | None = None
    pixel_size_um: float | None = None
    exposure_ms: float | None = None


class StageReader(Protocol):
    """Reads the stage motors stamped on each frame: ``{motor name: position or None}``."""

    names: list[str]

    def read(self) -> dict[str, float | None]: ...


class NoStage:
    """No StageMotors configured: frames carry an empty stage."""

    names: list[str] = []

    def read(self) -> dict[str, float | None]:
        return {}


class Source(ABC):
    """A frame provider. ``read`` returns the next frame, or ``None`` if none arrived within
    ``timeout_s`` while the source is still healthy (event-driven sources); it raises
    :class:`SourceLost` when the source is gone. Settings a source cannot honour raise
    :class:`NotReady` naming the source, so the device refuses them with a reason."""

    kind = "?"
    fixed_pixel_size_um: float | None = None
    """Set by sources that know their scale; the device then refuses PixelSize writes."""
    paces_itself = False
    """True when ``read`` blocks until the hardware delivers (no extra sleep needed)."""

    def __init__(self, spec: str) -> None:
        self.spec = spec

    @abstractmethod
    def open(self) -> None: ...

    @abstractmethod
    def read(self, timeout_s: float) -> SourceFrame | None: ...

    def close(self) -> None:  # noqa: B027 - optional hook, most sources hold nothing
        """Release the hardware; must never raise."""

    def natural_dtype(self) -> np.dtype:
        """The dtype the Image attribute is declared with (uint8 or uint16)."""
        return np.dtype(np.uint16)

    def set_exposure(self, exposure_ms: float) -> None:
        raise NotReady(f"the {self.kind} source ({self.spec}) has no exposure time; ExposureTime "
                       "applies to opencv cameras and the sim")

    def set_gain(self, gain: float) -> None:
        raise NotReady(f"the {self.kind} source ({self.spec}) has no gain; Gain applies to opencv "
                       "cameras and the sim")

    def set_frame_rate(self, rate_hz: float) -> None:  # noqa: B027 - optional hook
        """Hint for hardware that can pace itself; the thread paces every source anyway."""


# --------------------------------------------------------------------------- helpers
def coerce(data: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Fit a frame into the declared Image dtype without surprises: widening is exact,
    anything else is clipped (never wrapped) so a bright spot stays bright."""
    data = to_grey(np.asarray(data), keep_dtype=True)
    if data.dtype == dtype:
        return np.ascontiguousarray(data)
    info = np.iinfo(dtype)
    if np.issubdtype(data.dtype, np.integer) and np.iinfo(data.dtype).min >= info.min \
            and np.iinfo(data.dtype).max <= info.max:
        return data.astype(dtype)
    return np.clip(np.rint(data.astype(np.float64)), info.min, info.max).astype(dtype)


def _check_frame(data: np.ndarray, where: str) -> np.ndarray:
    if data.ndim not in (2, 3) or data.shape[0] == 0 or data.shape[1] == 0:
        raise SourceLost(f"{where} delivered an empty or non-image frame (shape {data.shape})")
    return data


# --------------------------------------------------------------------------- files
class FilesSource(Source):
    """A TIFF/PNG/JPEG sequence played in name order, looping. Decoded frames are cached
    (bounded) because re-decoding a 2048² TIFF costs more than publishing it; each file is
    still checked with ``stat`` every time it is shown, so a file that disappears or
    changes is noticed at once, and the glob is re-evaluated at every loop."""

    kind = "files"
    CACHE_BYTES = 512 * 1024 * 1024

    def __init__(self, spec: str, pattern: str) -> None:
        super().__init__(spec)
        if not pattern.strip():
            raise BadArgument("Source 'files:' needs a glob, e.g. files:/data/run1/*.tif")
        self.pattern = os.path.expanduser(pattern)
        self._paths: list[str] = []
        self._index = 0
        self._cache: OrderedDict[tuple[str, int, int], np.ndarray] = OrderedDict()
        self._cached_bytes = 0

    def _glob(self) -> list[str]:
        paths = sorted(p for p in globmod.glob(self.pattern) if os.path.isfile(p))
        if not paths:
            raise SourceLost(f"no file matches {self.pattern!r}; check the Source glob or put the images back")
        return paths

    def open(self) -> None:
        self._paths = self._glob()
        self._index = 0

    def natural_dtype(self) -> np.dtype:
        try:
            first = self._glob()[0]
            data = self._decode(first)
        except Exception:  # noqa: BLE001 - the dtype probe must not stop the device from starting
            return np.dtype(np.uint16)
        return np.dtype(np.uint8) if data.dtype == np.uint8 else np.dtype(np.uint16)

    def read(self, timeout_s: float) -> SourceFrame:
        if not self._paths or self._index >= len(self._paths):
            self._paths = self._glob()
            self._index = 0
        path = self._paths[self._index]
        self._index += 1
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self._paths = []
            raise SourceLost(f"file {path!r} of {self.pattern!r} disappeared; put it back or change "
                             "the Source glob") from None
        key = (path, st.st_mtime_ns, st.st_size)
        data = self._cache.get(key)
        if data is None:
            data = self._decode(path)
            self._remember(key, data)
        else:
            self._cache.move_to_end(key)
        return SourceFrame(data)

    def _remember(self, key: tuple[str, int, int], data: np.ndarray) -> None:
        if data.nbytes > self.CACHE_BYTES:
            return
        self._cache[key] = data
        self._cached_bytes += data.nbytes
        while self._cached_bytes > self.CACHE_BYTES and self._cache:
            _, old = self._cache.popitem(last=False)
            self._cached_bytes -= old.nbytes

    def _decode(self, path: str) -> np.ndarray:
        """Decode one file within the file-access time limit, so a hung mount cannot stop Snap
        (or the device) for longer than that (see servers.common.safefile)."""
        try:
            return run_with_time_limit(lambda: self._decode_now(path), f"reading {path!r}")
        except Failed as exc:
            raise SourceLost(exc.desc) from None

    def _decode_now(self, path: str) -> np.ndarray:
        data: Any  # tifffile's array, or OpenCV's (None when it cannot decode)
        try:
            if path.lower().endswith((".tif", ".tiff")):
                import tifffile

                data = tifffile.imread(path, key=0)
            else:
                import cv2

                data = cv2.imread(path, cv2.IMREAD_UNCHANGED)
                if data is None:
                    raise ValueError("OpenCV cannot decode it")
                if data.ndim == 3 and data.shape[-1] in (3, 4):
                    data = data[..., 2::-1] if data.shape[-1] == 3 else data[..., [2, 1, 0]]
        except FileNotFoundError:
            raise SourceLost(f"file {path!r} of {self.pattern!r} disappeared; put it back") from None
        except Exception as exc:  # noqa: BLE001 - any decoder error means this file is unusable
            raise SourceLost(f"file {path!r} is not a readable image ({type(exc).__name__}: {exc}); "
                             "replace or remove it") from None
        data = to_grey(_check_frame(np.asarray(data), f"file {path!r}"), keep_dtype=True)
        data.setflags(write=False)
        return data


# --------------------------------------------------------------------------- opencv
class OpenCVSource(Source):
    """OpenCV ``VideoCapture``: USB/GigE cameras by index, RTSP/HTTP streams and video files
    by URL or path. Video files loop, so a recorded session can stand in for a camera."""

    kind = "opencv"

    def __init__(self, spec: str, target: str) -> None:
        super().__init__(spec)
        if not target.strip():
            raise BadArgument("Source 'opencv:' needs a camera index or a URL/path, e.g. opencv:0")
        self.target: int | str = int(target) if target.strip().isdigit() else target.strip()
        self._cap: Any = None
        self._is_file = isinstance(self.target, str) and os.path.isfile(self.target)
        self._pending: dict[int, tuple[float, str]] = {}
        """Settings written while the camera was closed, applied when it opens."""

    def open(self) -> None:
        import cv2

        self.close()
        cap = cv2.VideoCapture(self.target)
        if not cap.isOpened():
            cap.release()
            raise SourceLost(f"OpenCV cannot open {self.target!r}; check that the camera is connected "
                             "(index), the stream answers (URL) or the file exists")
        self._cap = cap
        for prop, (value, _what) in self._pending.items():
            cap.set(prop, value)

    def natural_dtype(self) -> np.dtype:
        return np.dtype(np.uint8)

    @property
    def paces_itself(self) -> bool:  # type: ignore[override]
        return not self._is_file

    def read(self, timeout_s: float) -> SourceFrame:
        if self._cap is None:
            self.open()
        ok, image = self._cap.read()
        if not ok and self._is_file:
            import cv2

            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, image = self._cap.read()
        if not ok or image is None:
            self.close()
            raise SourceLost(f"OpenCV delivered no frame from {self.target!r}; the camera or stream "
                             "stopped (it is retried)")
        return SourceFrame(to_grey(_check_frame(image, f"OpenCV {self.target!r}"), keep_dtype=True))

    def _set(self, prop: int, value: float, what: str) -> None:
        if not self._is_file and self._cap is None:
            self._pending[prop] = (value, what)
            return
        if self._is_file or not self._cap.set(prop, value):
            raise NotReady(f"the opencv source {self.target!r} does not accept {what} (video files and "
                           "many drivers do not); set it in the camera's own tool")

    def set_exposure(self, exposure_ms: float) -> None:
        import cv2

        # V4L2 counts exposure_absolute in 100 µs; other back-ends take their own units.
        self._set(cv2.CAP_PROP_EXPOSURE, exposure_ms * 10.0, "an exposure time")

    def set_gain(self, gain: float) -> None:
        import cv2

        self._set(cv2.CAP_PROP_GAIN, gain, "a gain")

    def set_frame_rate(self, rate_hz: float) -> None:
        import cv2

        if self._cap is not None and rate_hz > 0 and not self._is_file:
            self._cap.set(cv2.CAP_PROP_FPS, rate_hz)

    def close(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            with contextlib.suppress(Exception):  # releasing a dead camera must not raise
                cap.release()


# --------------------------------------------------------------------------- sim
class SimSource(Source):
    """The virtual beamline's optical microscope, rendered at the motor positions read for
    this very frame, so the stage stamped on the frame is the one it was rendered at.
    ``renderer`` is :class:`simulation.camera.CameraRenderer` (or anything with its
    ``optics`` and ``render(stage_mm, frame_index, zoom, exposure_ms)``). ``zoom_reader``
    returns the microscope's current zoom name (the SimMicroscope device), or ``None``
    to keep the configured one; the pixel size always follows the zoom in use.

    A motor that cannot be read (a hung or stopped Pool) does not stop the picture, as it
    would not stop a real microscope: the frame is rendered where that motor was last read,
    which is where the simulated motor still is, and stamped ``None`` for it, since the
    camera no longer knows. Only before any position was read is there nothing to render."""

    kind = "sim"

    def __init__(self, spec: str, renderer: Any, stage: StageReader, zoom: str | None = None,
                 zoom_reader: Callable[[], str | None] | None = None) -> None:
        super().__init__(spec)
        if len(stage.names) < 2:
            raise BadArgument("the sim source needs StageMotors with the x and y motors, e.g. [samx, samy]")
        self.renderer = renderer
        self.stage = stage
        self.zoom_reader = zoom_reader
        zoom = zoom or renderer.optics.zoom
        self._check_zoom(zoom)
        self.zoom = zoom
        self._base_gain = float(renderer.optics.gain_dn_per_e)
        self.exposure_ms = float(renderer.optics.exposure_ms)
        self._index = 0
        self._last_xy: list[float | None] = [None, None]

    def _check_zoom(self, zoom: str) -> None:
        if zoom not in self.renderer.optics.zooms:
            raise BadArgument(f"zoom {zoom!r} is not a zoom level of the sim camera; use one of "
                              f"{', '.join(sorted(self.renderer.optics.zooms))}")

    @property
    def fixed_pixel_size_um(self) -> float:  # type: ignore[override]
        return float(self.renderer.optics.zooms[self.zoom].pixel_size_um)

    def open(self) -> None:
        self.renderer.reflectance(self.zoom)  # build the zoom's map now, not in the first frame

    def read(self, timeout_s: float) -> SourceFrame:
        if self.zoom_reader is not None:
            zoom = self.zoom_reader()
            if zoom and zoom != self.zoom:
                self._check_zoom(zoom)
                self.zoom = zoom
        positions = self.stage.read()
        for axis, name in enumerate(self.stage.names[:2]):
            value = positions.get(name)
            if value is not None:
                self._last_xy[axis] = value
        x, y = self._last_xy
        if x is None or y is None:
            missing = [n for n, v in zip(self.stage.names[:2], self._last_xy, strict=True) if v is None]
            raise SourceLost(f"the sim cannot render: motor(s) {', '.join(missing)} cannot be read; "
                             "check that the motors (Sardana Pool) are running")
        self._index += 1
        data = self.renderer.render((float(x), float(y)), frame_index=self._index, zoom=self.zoom,
                                    exposure_ms=self.exposure_ms)
        return SourceFrame(data, stage=positions, pixel_size_um=self.fixed_pixel_size_um,
                           exposure_ms=self.exposure_ms)

    def set_exposure(self, exposure_ms: float) -> None:
        self.exposure_ms = float(exposure_ms)

    def set_gain(self, gain: float) -> None:
        optics = self.renderer.optics
        self.renderer.optics = optics.model_copy(update={"gain_dn_per_e": self._base_gain * float(gain)})


# --------------------------------------------------------------------------- factory
def parse_spec(spec: str) -> tuple[str, str]:
    """Split the Source property into (kind, argument); refuse anything unknown."""
    text = (spec or "").strip()
    if text == "sim":
        return "sim", ""
    kind, sep, rest = text.partition(":")
    if sep and kind in ("opencv", "tango", "files"):
        return kind, rest
    raise BadArgument(f"Source {spec!r} is not understood; use one of {', '.join(SOURCE_KINDS)} "
                      "(set the device property Source, then Init)")


def make_source(spec: str, *, tango_factory: Callable[[str, str], Source] | None = None,
                sim_factory: Callable[[str], Source] | None = None) -> Source:
    """Build the source named by ``spec``. Tango and sim sources need collaborators the core
    does not import (a Tango client, the simulation package), so the shell passes factories."""
    kind, arg = parse_spec(spec)
    if kind == "files":
        return FilesSource(spec, arg)
    if kind == "opencv":
        return OpenCVSource(spec, arg)
    if kind == "tango":
        if tango_factory is None:
            raise NotReady("tango sources need the Tango client (run inside CameraDS)")
        return tango_factory(spec, arg)
    if sim_factory is None:
        raise NotReady("the sim source needs the simulation package (run inside CameraDS)")
    return sim_factory(spec)


def finite_positive(value: float, name: str, unit: str, upper: float) -> float:
    """Refuse NaN, inf, non-positive and absurd settings before they reach a source."""
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0 or value > upper:
        raise BadArgument(f"{name} must be a finite number in (0, {upper:g}] {unit}; got {value!r}")
    return float(value)


def split_tango_target(target: str) -> tuple[str, str]:
    """``a/b/c/attr`` of ``Source = tango:a/b/c/attr`` -> (``a/b/c``, ``attr``); a full TRL
    (``tango://host:port/a/b/c/attr``) and the no-database suffix ``#dbase=no`` are kept on
    the device name."""
    split = split_attribute_name(target)
    if split is None:
        raise BadArgument(f"Source 'tango:{target}' must be tango:<domain/family/member>/<attribute>, "
                          "e.g. tango:id00/limaccds/cam1/video_last_image")
    return split


def decode_lima_video(payload: bytes) -> np.ndarray:
    """Decode LimaCCDs' ``video_last_image`` (DevEncoded "VIDEO_IMAGE"): a 32-byte header
    then the grey pixels. Colour video modes are refused; set Lima's video_mode to Y8/Y16."""
    if len(payload) < LIMA_HEADER.size:
        raise SourceLost(f"the Lima video image is {len(payload)} bytes, shorter than its header")
    magic, _version, mode, _frame, width, height, endian, header_size, _p1, _p2 = LIMA_HEADER.unpack_from(payload)
    if magic != LIMA_MAGIC:
        raise SourceLost("the encoded image is not a Lima VIDEO_IMAGE (bad magic number)")
    if mode not in LIMA_MODES:
        raise SourceLost(f"Lima video mode {mode} is a colour/packed mode; set video_mode to Y8 or Y16")
    dtype = np.dtype(LIMA_MODES[mode]).newbyteorder(">" if endian else "<")
    count = int(width) * int(height)
    body = np.frombuffer(payload, dtype=dtype, count=count, offset=header_size)
    return body.reshape(int(height), int(width)).astype(dtype.newbyteorder("="))
