"""The RegistrationDS Tango shell: declares the public interface and delegates to the core.

Everything that computes lives in :class:`~servers.RegistrationDS.core.RegistrationCore`;
this class parses the JSON arguments, grabs camera frames over Tango (the one thing the
core cannot do without Tango), maps errors to ``SMART_*`` reasons and turns results into
State/Status and change events. See docs/registration.md, section "Tango interface".

Which result each attribute shows is a safety decision: ``Matrix``, ``Shift``,
``Rotation``, ``Scale``, ``Confidence`` and ``LastGoodResult`` only ever show a
registration that passed its confidence threshold, so a macro that reads ``Matrix`` to
move motors can never pick up a doubtful one. ``LastResult`` and ``Overlay`` show the last
attempt, good or not, because a doubtful result is exactly what a person has to look at.
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any

import numpy as np
import tango
from tango import AttrWriteType, DevState
from tango.server import device_property

from servers.common.device_base import SmartDevice, smart_attribute, smart_command
from servers.common.errors import BadArgument, Failed, NotFound, NotReady
from servers.common.jsonargs import dumps, parse_args
from servers.common.tango_client import devfailed_reason, devfailed_text
from servers.common.tango_glue import run_server, text_in
from servers.RegistrationDS.args import GrabImageArgs, LoadImageArgs, RegisterArgs, RegisterFiducialsArgs
from servers.RegistrationDS.confidence import DEFAULT_MIN_CONFIDENCE
from servers.RegistrationDS.core import RegistrationCore
from servers.RegistrationDS.results import Registration
from servers.RegistrationDS.slots import MAX_SLOTS, validate_slot_name

log = logging.getLogger(__name__)

MAX_IMAGE_SIDE = 8192
FRAME_ATTRIBUTES = ("FrameNumber", "Image", "FrameMetadata")

_RESULT_EVENTS = ("LastResult", "LastGoodResult", "Matrix", "Shift", "Rotation", "Scale", "Confidence")
_NO_GOOD_RESULT = ("no registration has succeeded since the server started; load two images with "
                   "LoadImage or GrabImage and run Register or RegisterFiducials")


class RegistrationDS(SmartDevice):
    """Named image slots and the registrations between them (docs/interface.md, RegistrationDS)."""

    PROXY_RETRY = False  # the camera proxy is kept after a failed read (see _camera)

    GrabTimeoutMs = device_property(
        dtype=int, default_value=2000,
        doc="Timeout of one read of the camera in GrabImage, in ms: below the 3 s default client timeout, so "
            "a hung camera gives a clear SMART_Failed before the caller times out")
    GrabAttempts = device_property(
        dtype=int, default_value=5,
        doc="How often GrabImage re-reads the camera when FrameMetadata belongs to another frame than Image")

    # ------------------------------------------------------------------ life
    def init_device(self) -> None:
        super().init_device()
        self._core = RegistrationCore()
        self._min_confidence = DEFAULT_MIN_CONFIDENCE
        self.proxies.clear()
        for name in (*_RESULT_EVENTS, "Overlay", "Slots", "SlotInfo", "MinConfidence"):
            self.set_change_event(name, True, False)
        self.report(DevState.ON, "RegistrationDS is ready. No images are loaded (slots are kept in "
                        "memory only): load them with LoadImage or GrabImage, then run Register.")

    def delete_device(self) -> None:
        self.proxies.clear()

    # ------------------------------------------------------------- commands
    @smart_command(gated=True, dtype_in=str, dtype_out=str,
                   doc_in='{"slot", "path", "pixel_size_um"?, "channel"?}: image file read by the server (TIFF incl. '
                          'FEI/Zeiss/TESCAN SEM, PNG, JPEG, AFM .spm/.gwy/.ibw/.jpk, Bruker EDX .bcf)',
                   doc_out='{"slot", "width", "height", "pixel_size_um", "pixel_size_source", "format", "dtype", '
                           '"warnings", "stage"?, "stage_source"?, "channel"?, "channels"?}')
    def LoadImage(self, argin: str) -> str:
        args = parse_args(argin, LoadImageArgs)
        with self.busy(f"Loading '{args.path}' into slot '{args.slot}'"):
            result = self._core.load_image(args.slot, args.path, args.pixel_size_um, args.channel)
        self._push_slots()
        return result.to_json()

    @smart_command(gated=True, dtype_in=str, dtype_out=str,
                   doc_in='{"slot", "device"}: camera device with Image, FrameNumber and FrameMetadata',
                   doc_out='LoadImage result plus "metadata": the FrameMetadata of exactly the grabbed frame')
    def GrabImage(self, argin: str) -> str:
        args = parse_args(argin, GrabImageArgs)
        with self.busy(f"Grabbing a frame of '{args.device}' into slot '{args.slot}'"):
            image, metadata = self._grab_frame(args.device)
            pixel_size = metadata.get("pixel_size_um")
            if (not isinstance(pixel_size, (int, float)) or isinstance(pixel_size, bool)
                    or not math.isfinite(pixel_size) or pixel_size <= 0):
                raise NotReady(f"the camera '{args.device}' reports no usable pixel size (pixel_size_um = "
                               f"{pixel_size!r} in FrameMetadata); set its PixelSize attribute and grab again")
            result = self._core.put_image(args.slot, image, float(pixel_size), metadata,
                                          source=f"tango:{args.device}")
        self._push_slots()
        return result.to_json()

    @smart_command(gated=True, dtype_in=str, dtype_out=str,
                   doc_in='{"reference", "target", "model"?, "reference_roi"?, "target_roi"?, "upsample"?, '
                          '"max_shift_px"?, "representation"?, "min_confidence"?, "rotation_range_deg"?, "prior"?: '
                          '{"rotation_deg"?, "rotation_tolerance_deg"?, "scale"?, "scale_tolerance"?, "shift_px"?, '
                          '"shift_tolerance_px"?}, "max_sigma_px"?, "max_sigma_deg"?}',
                   doc_out='{"model", "matrix" (target px -> reference px), "shift_px", "rotation_deg", "scale", '
                           '"confidence", "success", "uncertainty": {"shift_px", "rotation_deg", "scale", "point"}, '
                           '"covariance" (6x6, matrix entries), "elapsed_ms", ...}')
    def Register(self, argin: str) -> str:
        args = parse_args(argin, RegisterArgs)
        if "min_confidence" not in args.model_fields_set:
            args = args.model_copy(update={"min_confidence": self._min_confidence})
        with self.busy(f"Registering slot '{args.target}' onto '{args.reference}' ({args.model})"):
            result = self._core.register(args)
        self._adopt(result, f"confidence {result.confidence:.4g} is below the threshold "
                            f"{args.min_confidence:g}")
        return result.to_json()

    @smart_command(gated=True, dtype_in=str, dtype_out=str,
                   doc_in='{"reference", "target", "pairs": [[xt, yt, xr, yr], ...], "model"?: similarity | affine}',
                   doc_out='Register result plus "residuals_px", "rms_px", "inliers"')
    def RegisterFiducials(self, argin: str) -> str:
        args = parse_args(argin, RegisterFiducialsArgs)
        with self.busy(f"Fitting slot '{args.target}' onto '{args.reference}' from {len(args.pairs)} pairs"):
            result = self._core.register_fiducials(args)
        self._adopt(result, f"confidence {result.confidence:.3g}: {sum(result.inliers)} of {len(args.pairs)} "
                            f"pairs are consistent, RMS {result.rms_px:.3g} px")
        return result.to_json()

    @smart_command(gated=True, dtype_in=str, dtype_out=str, doc_in="slot name",
                   doc_out="the remaining slot names (JSON list)")
    def RemoveSlot(self, argin: str) -> str:
        self._core.remove_slot(validate_slot_name(text_in(argin)))
        self._push_slots()
        return dumps(self._core.slot_names)

    # ------------------------------------------------------------ attributes
    @smart_attribute(dtype=(str,), max_dim_x=MAX_SLOTS, unit="slot", label="Image slots", format="%s",
                     doc="Names of the image slots held in server memory (lost on restart: load again)")
    def Slots(self) -> list[str]:
        return self._core.slot_names

    @smart_attribute(dtype=str, unit="JSON", label="Slot details", format="%s",
                     doc="JSON list: per slot its name, width, height, pixel_size_um, dtype and warnings")
    def SlotInfo(self) -> str:
        return self._slot_info()

    @smart_attribute(dtype=str, unit="JSON", label="Last result", format="%s",
                     doc="JSON of the last registration attempt, successful or not (success says which)")
    def LastResult(self) -> str:
        result = self._core.last_result
        if result is None:
            raise NotReady("no registration has run since the server started; run Register or RegisterFiducials")
        return result.to_json()

    @smart_attribute(dtype=str, unit="JSON", label="Last good result", format="%s",
                     doc="JSON of the last registration whose success was true; Matrix, Shift, Rotation, "
                         "Scale and Confidence show this one")
    def LastGoodResult(self) -> str:
        return self._good().to_json()

    @smart_attribute(dtype=((float,),), max_dim_x=3, max_dim_y=3, unit="px", label="Matrix", format="%.6g",
                     doc="Last good registration: 3x3 homogeneous matrix, row-major, target px -> reference px")
    def Matrix(self) -> np.ndarray:
        return self._good().matrix_array

    @smart_attribute(dtype=(float,), max_dim_x=2, unit="px", label="Shift", format="%.3f",
                     doc="Last good registration: translation [dx, dy] of the matrix, in reference px")
    def Shift(self) -> list[float]:
        return list(self._good().shift_px)

    @smart_attribute(dtype=float, unit="deg", label="Rotation", format="%.4f",
                     doc="Last good registration: rotation of the matrix, positive from +x towards +y "
                         "(clockwise on screen, where y points down)")
    def Rotation(self) -> float:
        return self._good().rotation_deg

    @smart_attribute(dtype=float, unit="px/px", label="Scale", format="%.6f",
                     doc="Last good registration: reference px per target px")
    def Scale(self) -> float:
        return self._good().scale

    @smart_attribute(dtype=float, unit="1", label="Confidence", format="%.4f",
                     doc="Last good registration: probability (0..1) that the match is not a coincidence")
    def Confidence(self) -> float:
        return self._good().confidence

    @smart_attribute(dtype=((np.uint8,),), max_dim_x=MAX_IMAGE_SIDE, max_dim_y=MAX_IMAGE_SIDE, unit="1",
                     label="Overlay", format="%3d",
                     doc="Last attempt, for display: reference with the registered target blended in "
                         "(8 bit, at most 2048 px a side)")
    def Overlay(self) -> np.ndarray:
        overlay = self._core.overlay
        if overlay is None:
            raise NotReady("no registration has run since the server started, so there is nothing to overlay")
        return overlay

    MinConfidence = smart_attribute(
        gated_write=True, dtype=float, access=AttrWriteType.READ_WRITE, memorized=True, hw_memorized=True, unit="1",
        label="Minimum confidence", format="%.4f", min_value=0.0, max_value=1.0,
        doc="Register results below this confidence have success false (device in ALARM, not "
                    "adopted into Matrix); a min_confidence in the Register argument overrides it for one call")

    @MinConfidence.read
    def MinConfidence(self) -> float:
        return self._min_confidence

    @MinConfidence.write
    def MinConfidence(self, value: float) -> None:
        if not (math.isfinite(value) and 0.0 < value < 1.0):
            raise BadArgument(f"MinConfidence must lie strictly between 0 and 1, got {value}; "
                              f"the default is {DEFAULT_MIN_CONFIDENCE}")
        self._min_confidence = float(value)
        self.push_change_event("MinConfidence", self._min_confidence)

    # --------------------------------------------------------------- helpers
    def _good(self) -> Registration:
        result = self._core.last_good_result
        if result is None:
            raise NotReady(_NO_GOOD_RESULT)
        return result

    def _push_slots(self) -> None:
        self.push_change_event("Slots", self._core.slot_names)
        self.push_change_event("SlotInfo", self._slot_info())

    def _slot_info(self) -> str:
        return dumps([slot.as_dict() for slot in self._core.describe_slots()])

    def _adopt(self, result: Registration, why: str) -> None:
        """State, Status and events after a registration that completed (good or doubtful)."""
        pair = f"slot '{result.target}' onto '{result.reference}' ({result.model})"
        self.push_change_event("LastResult", result.to_json())
        if self.is_there_subscriber("Overlay", tango.EventType.CHANGE_EVENT):
            self.push_change_event("Overlay", self._core.overlay)
        if result.success:
            shift = result.shift_px
            for name in _RESULT_EVENTS[1:]:
                self.push_change_event(name, getattr(self, f"_event_{name}")(result))
            self.report(DevState.ON, (
                f"The last registration of {pair} succeeded with confidence {result.confidence:.4g}: "
                f"shift ({shift[0]:.2f}, {shift[1]:.2f}) px, rotation {result.rotation_deg:.3f} deg, "
                f"scale {result.scale:.5f}."))
            return
        good = self._core.last_good_result
        kept = ("Matrix, Shift, Rotation, Scale and Confidence still show the last good registration "
                f"(slot '{good.target}' onto '{good.reference}')" if good is not None
                else "Matrix, Shift, Rotation, Scale and Confidence have no value yet because no registration "
                     "has succeeded")
        self.report(DevState.ALARM, (
            f"The last registration of {pair} is in doubt and was not adopted: {why}. {kept}; LastResult and "
            "Overlay show the doubtful one. Check that both images show the same area (ROIs, pixel sizes), "
            "or register with RegisterFiducials; a successful registration returns the device to ON."))

    @staticmethod
    def _event_LastGoodResult(result: Registration) -> str:
        return result.to_json()

    @staticmethod
    def _event_Matrix(result: Registration) -> np.ndarray:
        return result.matrix_array

    @staticmethod
    def _event_Shift(result: Registration) -> list[float]:
        return list(result.shift_px)

    @staticmethod
    def _event_Rotation(result: Registration) -> float:
        return result.rotation_deg

    @staticmethod
    def _event_Scale(result: Registration) -> float:
        return result.scale

    @staticmethod
    def _event_Confidence(result: Registration) -> float:
        return result.confidence

    # ----------------------------------------------------------------- grab
    def _camera(self, device: str) -> tango.DeviceProxy:
        """The kept proxy to a camera (``PROXY_RETRY = False``): it reconnects by itself on its
        next call (also to a restarted camera) without the database, while building a new one
        needs the database and, for a camera this process already talked to, a call with Tango's
        default 3 s timeout -- with the camera's or the database's host cut off, GrabImage then
        answered after the client's timeout (docs/deployment.md, "Several hosts"). No silent
        retry: cppTango's reconnect-and-retry doubles GrabTimeoutMs on a silent camera."""
        try:
            return self.proxies.get(device, max(100, int(self.GrabTimeoutMs)))
        except tango.DevFailed as exc:
            raise _camera_error(device, exc, "cannot be reached") from None

    def _grab_frame(self, device: str) -> tuple[np.ndarray, dict[str, Any]]:
        """Image and FrameMetadata of one and the same frame.

        All three attributes come from one ``read_attributes`` call so a camera that
        snapshots per request (CameraDS does) answers consistently; the frame number in
        the metadata proves it, and a camera that does not is re-read a few times.
        """
        proxy = self._camera(device)
        seen: list[tuple[int, Any]] = []
        for _ in range(max(1, int(self.GrabAttempts))):
            try:
                replies = proxy.read_attributes(list(FRAME_ATTRIBUTES))
            except tango.DevFailed as exc:
                raise _camera_error(device, exc, "could not be read") from None
            values = {}
            for name, reply in zip(FRAME_ATTRIBUTES, replies, strict=True):
                if reply.has_failed or reply.value is None:
                    raise _attribute_error(device, name, reply)
                values[name] = reply.value
            metadata = _metadata(device, values["FrameMetadata"])
            number = int(values["FrameNumber"])
            if metadata.get("frame_number") == number:
                image = np.array(values["Image"], copy=True)
                if image.ndim != 2:
                    raise Failed(f"the camera '{device}' returned an Image of shape {image.shape}; "
                                 "a 2-D image attribute is needed")
                return image, metadata
            seen.append((number, metadata.get("frame_number")))
            time.sleep(0.01)
        raise Failed(f"the camera '{device}' never returned Image and FrameMetadata of the same frame in "
                     f"{len(seen)} reads (FrameNumber vs FrameMetadata.frame_number: {seen}); the camera "
                     "must snapshot one frame per read_attributes call. Slow its frame rate or Stop it and Snap")


def _camera_error(device: str, exc: tango.DevFailed, what: str) -> Exception:
    reason = devfailed_reason(exc)
    if "NotDefined" in reason or "DeviceNotExported" in reason or reason == "SMART_NotFound":
        return NotFound(f"the camera device '{device}' {what}: {devfailed_text(exc)}. Check the name "
                        "(e.g. smart/camera/1) and that its server runs")
    return Failed(f"the camera device '{device}' {what}: {devfailed_text(exc)}. Check that its server runs "
                  "and answers; nothing was stored")


def _attribute_error(device: str, name: str, reply: tango.DeviceAttribute) -> Exception:
    errors = reply.get_err_stack() if reply.has_failed else ()
    reason = devfailed_reason(errors)
    detail = devfailed_text(errors) or "no value (quality INVALID)"
    if reason == "API_AttrNotFound":
        return NotFound(f"the device '{device}' has no attribute {name}; GrabImage needs a camera with "
                        f"{', '.join(FRAME_ATTRIBUTES)} (a CameraDS device)")
    if reason == "SMART_NotReady" or not errors:
        return NotReady(f"the camera '{device}' has no frame to give ({name}: {detail}); Snap or Start it "
                        "and grab again")
    return Failed(f"reading {name} of the camera '{device}' failed: {detail}; nothing was stored")


def _metadata(device: str, text: Any) -> dict[str, Any]:
    try:
        metadata = json.loads(text)
    except (TypeError, ValueError):
        metadata = None
    if not isinstance(metadata, dict):
        raise Failed(f"the FrameMetadata of the camera '{device}' is not a JSON object ({str(text)[:80]!r}); "
                     "GrabImage needs frame_number and pixel_size_um in it")
    return metadata


def main(argv: list[str] | None = None) -> int:
    return run_server([RegistrationDS], argv)


if __name__ == "__main__":
    raise SystemExit(main())
