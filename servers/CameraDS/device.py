"""The CameraDS Tango shell: declares the public interface and delegates to the core.

The core (:mod:`servers.CameraDS.acquisition` with a source from
:mod:`servers.CameraDS.sources`) does the work; this class only builds it from the
device properties, maps its state to Tango states and pushes one change and one
data-ready event per frame. See docs/camera.md.

Consistency of Image and FrameMetadata: ``read_attr_hardware`` takes one snapshot of the
current frame per client request, and every attribute of that request is read from it,
so ``read_attributes(["Image", "FrameMetadata"])`` always returns one frame's pixels with
that frame's metadata even while frames keep arriving.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import numpy as np
import tango
from tango import AttrQuality, AttrWriteType, DevState
from tango.server import device_property
from tango.utils import PyTangoThreadPoolExecutor

from servers.CameraDS import sources
from servers.CameraDS.acquisition import ALARM, FAULT, RUNNING, Acquisition, Frame
from servers.CameraDS.simbuild import SIM_RENDERER, SimProperties, build_sim_source
from servers.CameraDS.stage import StageMonitor
from servers.CameraDS.tango_io import PROXY_TIMEOUT_MS, TangoImageSource, TangoStageReader
from servers.CameraDS.tiffsave import save_tiff
from servers.common.device_base import SmartDevice, smart_attribute, smart_command, smart_errors
from servers.common.errors import NotReady
from servers.common.safefile import check_write_target, run_with_time_limit
from servers.common.tango_glue import run_server, text_in, text_out

log = logging.getLogger(__name__)

MAX_DIM = 8192
_TANGO_TYPES = {np.dtype(np.uint8): tango.CmdArgType.DevUChar, np.dtype(np.uint16): tango.CmdArgType.DevUShort}


def cameras_in_this_server() -> int:
    """How many CameraDS devices this server process serves (from the database; 2 when unknown,
    so that an unreadable database errs towards the definition every camera can use)."""
    try:  # the query Tango itself makes at start-up to create the devices (file databases too)
        util = tango.Util.instance()
        return len(list(util.get_database().get_device_name(util.get_ds_name(), "CameraDS")))
    except Exception:  # noqa: BLE001 - no database answer: assume the shared definition
        return 2


class CameraDS(SmartDevice):
    """Live camera acquisition: sim, OpenCV, another Tango image attribute, or files."""

    Source = device_property(dtype=str, default_value="sim",
                             doc="sim | opencv:<index or URL> | tango:<device>/<attribute> | files:<glob>")
    StageMotors = device_property(dtype=(str,), default_value=[],
                                  doc="Tango names of the x and y motors (Position attribute) stamped on every frame")
    SimBeamline = device_property(dtype=str, default_value="",
                                  doc="sim: virtual beamline JSON (sample, mounting, stage, camera optics)")
    SimSample = device_property(dtype=str, default_value="",
                                doc="sim: sample JSON, used with SimSeed's random mounting if SimBeamline is empty")
    SimSeed = device_property(dtype=int, default_value=1,
                              doc="sim: seed of the generated sample and mounting when no SimBeamline is given")
    SimZoom = device_property(dtype=str, default_value="",
                              doc="sim: zoom level (low, mid, high); empty = the beamline's camera zoom")
    SimMicroscope = device_property(dtype=str, default_value="",
                                    doc="sim: device whose Zoom attribute the sim follows (SimMicroscope)")
    SimNoise = device_property(dtype=bool, default_value=True, doc="sim: add shot and read noise")
    SimRenderer = device_property(dtype=str, default_value=SIM_RENDERER,
                                  doc="sim: module:function that builds the renderer (the simulation's by default)")
    AutoStart = device_property(dtype=bool, default_value=False,
                                doc="start streaming when the server starts")

    # ------------------------------------------------------------------ life
    def init_device(self) -> None:
        super().init_device()
        self._acq: Acquisition | None = None
        self._config_error: str | None = None
        self._snapshot: Frame | None = None
        self._publish_lock = threading.Lock()
        for name in ("FrameNumber", "FrameMetadata"):
            self.set_change_event(name, True, False)
        # One bounded stage reader for the frames and the sim (which renders where it reads).
        self._stage = StageMonitor(TangoStageReader(list(self.StageMotors)) if self.StageMotors else sources.NoStage(),
                                   executor=PyTangoThreadPoolExecutor)
        try:
            source = self._build_source()
            dtype = self._declared_dtype(source.natural_dtype())
            self._acq = Acquisition(source, self._stage, self._publisher(), dtype=dtype,
                                    thread_context=tango.EnsureOmniThread)
        except Exception as exc:  # noqa: BLE001 - a bad configuration must leave a device that explains it
            desc = getattr(exc, "desc", f"{type(exc).__name__}: {exc}")
            self._config_error = (f"the camera is not configured: {desc} Fix the device properties and run Init.")
            log.error("CameraDS configuration error: %s", desc)
            dtype = self._declared_dtype(np.dtype(np.uint16))
        self._ensure_image_attribute(dtype)
        self._show_settings_as_write_values()
        if self._acq is not None and self.AutoStart:
            self._acq.start()

    def _show_settings_as_write_values(self) -> None:
        """Forms show each setting's write value beside its read value; until the first write
        Tango reports 0 there, which reads as "exposure 0 ms". Start them at the settings in
        force; a memorized value, applied after Init, replaces them."""
        if self._acq is None:
            return
        settings = self._acq.settings
        attributes = self.get_device_attr()
        for name, value in (("ExposureTime", settings.exposure_ms), ("Gain", settings.gain),
                            ("TargetFrameRate", settings.target_rate_hz), ("PixelSize", self._acq.pixel_size_um)):
            if value is not None and np.isfinite(value):
                attributes.get_w_attr_by_name(name).set_write_value(float(value))

    def delete_device(self) -> None:
        acq, self._acq = getattr(self, "_acq", None), None
        if acq is not None:
            acq.close()

    def _build_source(self) -> sources.Source:  # (the class; ``Source`` here is the property)
        def sim_factory(spec: str) -> sources.Source:
            props = SimProperties(beamline=self.SimBeamline, sample=self.SimSample, seed=int(self.SimSeed),
                                  zoom=self.SimZoom, noise=bool(self.SimNoise),
                                  renderer=str(self.SimRenderer).strip() or SIM_RENDERER)
            return build_sim_source(spec, props, self._stage, self._zoom_reader())

        # A Source stored as UTF-8 (a folder named in any script) reaches us as Latin-1 look-alikes.
        return sources.make_source(text_in(self.Source), tango_factory=TangoImageSource, sim_factory=sim_factory)

    def _zoom_reader(self) -> Any:
        name = self.SimMicroscope
        if not name:
            return None
        proxies = self.proxies

        def read() -> str | None:
            try:
                return str(proxies.get(name, PROXY_TIMEOUT_MS).read_attribute("Zoom").value)
            except tango.DevFailed:
                proxies.forget(name)
                return None

        return read

    def _declared_dtype(self, natural: np.dtype) -> np.dtype:
        """The type Image is declared with: the source's own depth when this device is the only
        CameraDS of its server, else uint16 for every one of them.

        Tango keeps one definition per attribute name and device class in a server: a second
        camera declaring Image with another type is refused ("with other definition"). Every
        camera of a several-camera server therefore declares the widest type; 8-bit frames
        are widened without changing a value (docs/camera.md, "Several cameras in one server").
        """
        return natural if cameras_in_this_server() <= 1 else np.dtype(np.uint16)

    def _ensure_image_attribute(self, dtype: np.dtype) -> None:
        """Image is declared with the source's natural dtype (uint8 or uint16); an Init with
        a source of another depth re-declares it."""
        current = getattr(self, "_image_dtype", None)
        if current == dtype:
            return
        if current is not None:
            self.remove_attribute("Image")
        image = tango.ImageAttr("Image", _TANGO_TYPES[dtype], AttrWriteType.READ, MAX_DIM, MAX_DIM)
        props = tango.UserDefaultAttrProp()
        props.set_unit("count")
        props.set_label("Camera image")
        props.set_format("%6d")
        props.set_description("The current camera frame at full bit depth, in the camera's digital units "
                              "(ADU); change and data-ready events (counter = frame number) on every frame.")
        image.set_default_properties(props)
        self.add_attribute(image, self.read_Image)
        self.set_change_event("Image", True, False)
        self.set_data_ready_event("Image", True)
        self._image_dtype = dtype

    def _publisher(self) -> Any:
        def publish(frame: Frame) -> None:
            with self._publish_lock:
                self.push_change_event("Image", frame.data, frame.timestamp, AttrQuality.ATTR_VALID)
                self.push_data_ready_event("Image", frame.number & 0x7FFFFFFF)
                self.push_change_event("FrameNumber", frame.number, frame.timestamp, AttrQuality.ATTR_VALID)
                self.push_change_event("FrameMetadata", frame.metadata().to_json(), frame.timestamp,
                                       AttrQuality.ATTR_VALID)

        return publish

    def _core(self) -> Acquisition:
        if self._acq is None:
            raise NotReady(self._config_error or "the camera is not initialised; run Init")
        return self._acq

    # --------------------------------------------------------------- state
    def refresh_state(self) -> None:
        """The acquisition thread owns the camera's state; State and Status show it as it is now."""
        if self._acq is None:
            self.report(DevState.FAULT, self._config_error or "not initialised; run Init", only_changes=True)
            return
        state = {RUNNING: DevState.RUNNING, ALARM: DevState.ALARM, FAULT: DevState.FAULT}.get(self._acq.state,
                                                                                          DevState.ON)
        self.report(state, self._acq.status(), only_changes=True)

    def read_attr_hardware(self, attr_list: Any) -> None:
        self._snapshot = self._acq.latest if self._acq is not None else None

    def _frame(self) -> Frame:
        frame = self._snapshot
        if frame is None:
            raise NotReady("there is no frame yet; Start the camera or Snap")
        return frame

    # ------------------------------------------------------------- commands
    @smart_command(doc_in="Start streaming (no-op when already streaming).")
    def Start(self) -> None:
        self._core().start()

    @smart_command(doc_in="Stop streaming; always works, also in FAULT.")
    def Stop(self) -> None:
        if self._acq is not None:
            self._acq.stop()

    @smart_command(dtype_out=np.int64, doc_out="frame number of the new frame")
    def Snap(self) -> int:
        return self._core().snap().number

    @smart_command(dtype_in=str, dtype_out=str, doc_in="absolute path ending in .tif/.tiff",
                   doc_out="the path written")
    def SaveImage(self, argin: str) -> str | bytes:
        core = self._core()
        target, frame = text_in(argin), core.latest

        def write() -> str:
            if target.strip() and os.path.isabs(os.path.expanduser(target.strip())):
                check_write_target(os.path.expanduser(target.strip()), "TIFF file")
            return save_tiff(target, frame)

        return text_out(run_with_time_limit(write, f"writing {target!r}"))

    # ----------------------------------------------------------- attributes
    @smart_errors
    def read_Image(self, attr: tango.Attribute) -> None:
        attr.set_value(self._frame().data)

    @smart_attribute(dtype=np.int64, unit="count", label="Frame number", format="%d",
                     doc="number of the frame in Image (counts from 1 since the server started)")
    def FrameNumber(self) -> int:
        frame = self._snapshot
        return frame.number if frame is not None else 0

    @smart_attribute(dtype=str, unit="JSON", label="Frame metadata", format="%s",
                     doc="JSON: frame_number, timestamp, exposure_ms, gain, pixel_size_um, stage {motor: position}, "
                         "width, height, dtype, source; always of the frame in Image")
    def FrameMetadata(self) -> str:
        return self._frame().metadata().to_json()

    @smart_attribute(dtype=float, access=AttrWriteType.READ_WRITE, memorized=True, hw_memorized=True,
                     unit="ms", label="Exposure time", format="%.3f", min_value=0.001, max_value=1e6,
                     doc="exposure per frame (sim and opencv cameras; refused by files and tango sources)")
    def ExposureTime(self) -> float:
        return self._acq.settings.exposure_ms if self._acq else float("nan")

    @ExposureTime.write
    def ExposureTime(self, value: float) -> None:
        self._core().set_exposure(value)

    @smart_attribute(dtype=float, access=AttrWriteType.READ_WRITE, memorized=True, hw_memorized=True,
                     unit="1", label="Gain", format="%.3f", min_value=0.001, max_value=1000.0,
                     doc="gain: sim = multiple of the nominal gain; opencv = the driver's own gain units")
    def Gain(self) -> float:
        return self._acq.settings.gain if self._acq else float("nan")

    @Gain.write
    def Gain(self, value: float) -> None:
        self._core().set_gain(value)

    @smart_attribute(dtype=float, access=AttrWriteType.READ_WRITE, memorized=True, hw_memorized=True,
                     unit="Hz", label="Target frame rate", format="%.2f", min_value=0.0, max_value=1000.0,
                     doc="frames per second asked for while streaming; 0 = as fast as the source delivers")
    def TargetFrameRate(self) -> float:
        return self._acq.settings.target_rate_hz if self._acq else float("nan")

    @TargetFrameRate.write
    def TargetFrameRate(self, value: float) -> None:
        self._core().set_target_rate(value)

    @smart_attribute(dtype=float, unit="Hz", label="Frame rate", format="%.2f",
                     doc="frames per second measured over the last 30 frames (0 when idle)")
    def FrameRate(self) -> float:
        return self._acq.frame_rate() if self._acq else 0.0

    @smart_attribute(dtype=float, access=AttrWriteType.READ_WRITE, memorized=True, hw_memorized=True,
                     unit="um/px", label="Pixel size", format="%.5f", min_value=1e-4, max_value=1e4,
                     doc="sample-plane pixel size stamped on frames; the sim sets it from its zoom and refuses writes")
    def PixelSize(self) -> float:
        return self._acq.pixel_size_um if self._acq else float("nan")

    @PixelSize.write
    def PixelSize(self, value: float) -> None:
        self._core().set_pixel_size(value)

    @smart_attribute(dtype=int, unit="px", label="Width", format="%d",
                     doc="width of the frame in Image (0 before any)")
    def Width(self) -> int:
        frame = self._snapshot
        return int(frame.data.shape[1]) if frame is not None else 0

    @smart_attribute(dtype=int, unit="px", label="Height", format="%d",
                     doc="height of the frame in Image (0 before any)")
    def Height(self) -> int:
        frame = self._snapshot
        return int(frame.data.shape[0]) if frame is not None else 0

    source_attribute = smart_attribute(name="Source", dtype=str, unit="text", label="Source", format="%s",
                                       fget="_read_source", doc="the Source property in use")

    def _read_source(self) -> str:
        return str(self.Source)


def main(argv: list[str] | None = None) -> int:
    return run_server([CameraDS], argv)


if __name__ == "__main__":
    raise SystemExit(main())
