"""The ParticleDS Tango shell: declares the public interface and delegates to the core.

:class:`~servers.ParticleDS.core.ParticleCore` does the detection and holds settings and
results; this class parses arguments, fetches the image (a file, or another device's image
attribute through :mod:`servers.ParticleDS.remote_image`), maps errors to SMART reasons and
reports State/Status. See docs/particles.md.

Detection of a large image takes up to a second, so ``Detect`` releases the Tango device
monitor while it works: clients can read ``State`` (RUNNING) and the previous results in
the meantime. Commands and setting writes take their turn on the device's gate: a second
``Detect`` waits until the first has finished (up to ``COMMAND_WAIT_S``), as a call
waiting for the Tango monitor would (docs/interface.md, "Several clients at once").
Everything the core returns is immutable, so the concurrent reads are safe.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np
import tango
from tango import AttrWriteType, DevState, EventType

from servers.common.device_base import SmartDevice, smart_attribute, smart_command
from servers.common.errors import BadArgument, NotFound, NotReady, SmartError, SourceLost
from servers.common.jsonargs import parse_args
from servers.common.lima import encode_rgb24
from servers.common.safefile import check_write_target, run_with_time_limit
from servers.common.tango_glue import run_server, text_in, text_out
from servers.ParticleDS import image_input
from servers.ParticleDS.core import ParticleCore
from servers.ParticleDS.remote_image import image_device, read_image_attribute
from servers.ParticleDS.results import DetectReply
from servers.ParticleDS.settings import MAX_DIAMETER, METHODS, DetectArgs

log = logging.getLogger(__name__)

MAX_PARTICLES = 100_000
"""Spectrum length limit of the per-particle attributes (a 10k x 10k SEM mosaic holds fewer)."""
MAX_DIM = 8192
MAX_SEPARATION = 1000.0
"""px: features farther apart than this are never "too close"; larger values only break detection."""
MAX_INTENSITY = 1e12
"""Largest grey level a threshold makes sense for (float images included; 16-bit is 65535)."""
MAX_INTENSITY_SUM = 1e15
"""Largest sensible mass: 65535 grey levels over a 255 px feature is ~3e9; floats leave room above."""
RECOVERY_CHECK_S = 2.0
RECOVERY_PING_MS = 500
"""State pings a lost source (at most every RECOVERY_CHECK_S): a quick answer or none."""

RESULT_ATTRIBUTES = ("Count", "IsolatedCount", "X", "Y", "Mass", "Size", "Eccentricity", "Signal",
                     "Isolated", "NearestNeighbour", "Multiplicity", "OnBrightArea", "Table",
                     "LastResult")
SETTING_ATTRIBUTES = ("Diameter", "MinMass", "MaxSize", "Separation", "NoiseSize", "Threshold",
                      "Percentile", "Invert", "Method", "IsolationRadius")


def jpeg_rgb(rgb: np.ndarray, quality: int = 95) -> bytes:
    """An (h, w, 3) uint8 RGB image as JPEG bytes (the payload of Tango's JPEG_RGB encoding)."""
    import cv2

    ok, encoded = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise SmartError("the annotated image could not be encoded as JPEG")
    return encoded.tobytes()


def _setting(name: str, dtype: Any, unit: str, label: str, fmt: str, doc: str, **limits: Any) -> smart_attribute:
    """A memorized read-write setting, read from and validated by the core.

    ``limits`` (min_value, max_value, min_alarm, ...) are Tango's own: an absurd write is
    refused by Tango before it reaches the core or the memorized value."""

    def read(self: ParticleDS) -> Any:
        return self._core.get_setting(name)

    def write(self: ParticleDS, value: Any) -> None:
        self._core.set_setting(name, value.item() if isinstance(value, np.generic) else value)
        self.push_change_event(name, self._core.get_setting(name))

    read.__name__, write.__name__ = f"read_{name}", f"write_{name}"
    return smart_attribute(name=name, dtype=dtype, access=AttrWriteType.READ_WRITE, memorized=True,
                           hw_memorized=True, unit=unit, label=label, format=fmt, doc=doc,
                           fget=read, fset=write, gated_write=True, **limits)


def _result_spectrum(name: str, dtype: Any, unit: str, label: str, fmt: str, doc: str,
                     core_name: str) -> smart_attribute:
    """A per-particle array of the last detection (empty before the first one)."""

    def read(self: ParticleDS) -> np.ndarray:
        return getattr(self._core, core_name)

    read.__name__ = f"read_{name}"
    return smart_attribute(name=name, dtype=(dtype,), max_dim_x=MAX_PARTICLES, unit=unit, label=label,
                           format=fmt, doc=doc, fget=read)


class ParticleDS(SmartDevice):
    """Particle detection (trackpy) on a reference or camera image, and isolation scoring."""

    PROXY_RETRY = False  # one kept proxy per image source, no silent retry (read_image_attribute)

    # ------------------------------------------------------------------ life
    def init_device(self) -> None:
        super().init_device()
        if not hasattr(self, "_core"):  # Init keeps settings and results: they are not hardware state
            self._core = ParticleCore()
            self._last_image: np.ndarray | None = None
            self._last_source = ""
            self._encoded: tuple[Any, bytes] | None = None
            self._jpeg: tuple[Any, bytes] | None = None
            self._fault_source: str | None = None
            self._next_recovery_check = 0.0
        for name in RESULT_ATTRIBUTES + SETTING_ATTRIBUTES + ("AnnotatedImage", "AnnotatedImageRGB",
                                                               "AnnotatedImageJPEG"):
            self.set_change_event(name, True, False)
        self._show_settings_in_force()
        self._report_results()

    def _show_settings_in_force(self) -> None:
        """Forms and clients read each setting's write value beside its read value; until the
        first write Tango reports 0 there (``Diameter 0``), and a client that saves and later
        writes back that value is refused. Start them at the settings in force; a memorized
        value, applied after Init, replaces them."""
        attributes = self.get_device_attr()
        for name in SETTING_ATTRIBUTES:
            attributes.get_w_attr_by_name(name).set_write_value(self._core.get_setting(name))

    # ----------------------------------------------------------------- state
    def _report_results(self) -> None:
        """State and Status from the last detection: ALARM when its answer looks wrong."""
        results = self._core.results
        if results is None:
            self.report(DevState.ON, "Ready. No detection yet: call Detect with a 'path' or an image 'attribute'.")
            return
        where = f"in {self._last_source}" if self._last_source else ""
        if results.count == 0:
            self.report(DevState.ALARM, f"The last detection {where} found no particles: check Diameter, MinMass, "
                        "Invert and the ROI against the image (AnnotatedImage), then Detect again.")
        elif results.isolated_count == 0:
            self.report(DevState.ALARM, f"The last detection {where} found {results.count} particles but none is "
                        f"isolated: IsolationRadius ({results.settings['IsolationRadius']:g} px) may be too large "
                        "for this image, or the region is crowded.")
        else:
            self.report(DevState.ON, f"Ready. The last detection {where} found {results.count} particles, "
                        f"{results.isolated_count} isolated, in {results.elapsed_ms:.0f} ms.")

    def refresh_state(self) -> None:
        if self._fault_source is not None and time.monotonic() >= self._next_recovery_check:
            self._try_recover()

    def _try_recover(self) -> None:
        """A lost source that answers again ends the FAULT; the last results never left."""
        self._next_recovery_check = time.monotonic() + RECOVERY_CHECK_S
        source = self._fault_source
        if source is None:
            return
        try:
            self.proxies.get(image_device(source)[0], RECOVERY_PING_MS).ping()
        except (tango.DevFailed, BadArgument):
            return
        self._fault_source = None
        self._report_results()

    def _enter_fault(self, source: str, desc: str) -> None:
        self._fault_source = source
        self._next_recovery_check = time.monotonic() + RECOVERY_CHECK_S
        self.report(DevState.FAULT, f"The image source {source} is lost: {desc} The results of the last "
                    "detection are still readable; the device returns to ON when the source answers again.")

    # -------------------------------------------------------------- commands
    @smart_command(gated=True, dtype_in=str, dtype_out=str,
                   doc_in='JSON {"path": file on the server | "attribute": "smart/camera/1/Image", "roi"?: '
                          '[x, y, w, h], <setting>: value, ...}; with neither path nor attribute the previous image '
                          'is used again',
                   doc_out='JSON {"count", "isolated", "elapsed_ms", "read_ms", "roi", "source"}')
    def Detect(self, argin: str) -> str:
        args = parse_args(argin, DetectArgs, what="Detect argument")
        return self._detect(args).to_json()

    def _detect(self, args: DetectArgs) -> DetectReply:
        source = (f"file {args.path}" if args.path is not None else args.attribute if args.attribute is not None
                  else self._last_source)
        if args.path is None and args.attribute is None and self._last_image is None:
            raise NotReady("there is no previous image to detect on; give 'path' (an image file on the server) "
                           "or 'attribute' (e.g. smart/camera/1/Image)")
        start = time.perf_counter()
        try:
            with self.busy(f"Detecting particles in {source}"):
                if args.path is not None:
                    image = image_input.load_image(args.path, args.channel)
                elif args.attribute is not None:
                    image = read_image_attribute(args.attribute, self.proxies)
                elif self._last_image is not None:
                    image = self._last_image
                else:  # refused above already; a second check keeps the type exact
                    raise NotReady("there is no previous image to detect on")
                read_ms = (time.perf_counter() - start) * 1e3
                summary = self._core.detect_args(args, image)
        except SourceLost as exc:  # the device goes to FAULT; Detect answers SMART_NotFound (docs/particles.md)
            self._enter_fault(str(args.attribute), exc.desc)
            raise NotFound(exc.desc) from None
        self._last_image, self._last_source, self._fault_source = image, source, None
        reply = DetectReply(summary, round((time.perf_counter() - start) * 1e3, 3), round(read_ms, 3), source)
        self._report_results()
        self._push_results()
        return reply

    def _push_results(self) -> None:
        """Change events for panels; the annotated images only when someone listens (they cost)."""
        core = self._core
        values = {"Count": core.count, "IsolatedCount": int(np.count_nonzero(core.isolated)), "X": core.x,
                  "Y": core.y, "Mass": core.mass, "Size": core.size, "Eccentricity": core.eccentricity,
                  "Signal": core.signal, "Isolated": core.isolated, "NearestNeighbour": core.nn_distance,
                  "Multiplicity": core.multiplicity, "OnBrightArea": core.on_bright_area,
                  "Table": core.table(), "LastResult": self._last_result()}
        for name in RESULT_ATTRIBUTES:
            self.push_change_event(name, values[name])
        if self.is_there_subscriber("AnnotatedImage", EventType.CHANGE_EVENT):
            self.push_change_event("AnnotatedImage", core.annotated_image(rgb=False))
        if self.is_there_subscriber("AnnotatedImageRGB", EventType.CHANGE_EVENT):
            self.push_change_event("AnnotatedImageRGB", *self._annotated_rgb())
        if self.is_there_subscriber("AnnotatedImageJPEG", EventType.CHANGE_EVENT):
            self.push_change_event("AnnotatedImageJPEG", *self._annotated_jpeg())

    @smart_command(gated=True, dtype_in=str, dtype_out=str, doc_in="CSV file path on the server (overwritten)",
                   doc_out="the absolute path written")
    def ExportCsv(self, argin: str) -> str | bytes:
        target = text_in(argin)

        def write() -> str:
            check_write_target(os.path.abspath(os.path.expanduser(target)) if target.strip() else target, "CSV file")
            return self._core.export_csv(target)

        return text_out(run_with_time_limit(write, f"writing {target!r}"))

    # ------------------------------------------------------------- settings
    # Declared in this order on purpose: Tango restores memorized values in declaration order,
    # and Diameter must come before NoiseSize for the rule NoiseSize < Diameter to accept them.
    Diameter = _setting("Diameter", int, "px", "Diameter", "%d",
                        "feature diameter, odd (3..255); a little larger than the particles",
                        min_value=3, max_value=MAX_DIAMETER)
    MinMass = _setting("MinMass", float, "1", "Minimum mass", "%.6g",
                       "minimum integrated brightness of a feature (trackpy mass, in image grey levels x px); the "
                       "main noise filter", min_value=0.0, max_value=MAX_INTENSITY_SUM)
    MaxSize = _setting("MaxSize", float, "px", "Maximum size", "%.3f",
                       "maximum radius of gyration; larger features (clusters) are not reported; 0 = no limit",
                       min_value=0.0, max_value=MAX_DIAMETER)
    Separation = _setting("Separation", float, "px", "Separation", "%.3f",
                          "minimum distance between features; 0 = Diameter + 1", min_value=0.0,
                          max_value=MAX_SEPARATION)
    NoiseSize = _setting("NoiseSize", float, "px", "Noise size", "%.3f",
                         "width of the Gaussian noise filter; must be smaller than Diameter", min_value=0.0,
                         max_value=MAX_DIAMETER)
    Threshold = _setting("Threshold", float, "1", "Threshold", "%.6g",
                         "clip the band-passed image below this (grey levels); 0 = trackpy default", min_value=0.0,
                         max_value=MAX_INTENSITY)
    Percentile = _setting("Percentile", float, "%", "Percentile", "%.2f",
                          "a peak must be brighter than this percentile of the band-passed image (0..<100)",
                          min_value=0.0, max_value=100.0)
    Invert = _setting("Invert", bool, "on/off", "Invert", "%s", "look for dark particles on a bright background")
    Method = _setting("Method", str, "name", "Method", "%s", " | ".join(METHODS))
    IsolationRadius = _setting("IsolationRadius", float, "px", "Isolation radius", "%.3f",
                               "a particle with another feature (or the image edge) nearer than this is not "
                               "isolated", min_value=0.0, max_value=MAX_DIM)

    # -------------------------------------------------------------- results
    @smart_attribute(dtype=int, unit="particles", label="Count", format="%d",
                     doc="number of particles found by the last detection (0 before the first)")
    def Count(self) -> int:
        return self._core.count

    @smart_attribute(dtype=int, unit="particles", label="Isolated count", format="%d",
                     doc="number of isolated particles of the last detection")
    def IsolatedCount(self) -> int:
        return int(np.count_nonzero(self._core.isolated))

    X = _result_spectrum("X", float, "px", "X", "%.3f", "column of each particle in the source image "
                         "(ROI offset added)", "x")
    Y = _result_spectrum("Y", float, "px", "Y", "%.3f", "row of each particle in the source image "
                         "(ROI offset added)", "y")
    Mass = _result_spectrum("Mass", float, "1", "Mass", "%.6g", "integrated brightness (trackpy mass)",
                            "mass")
    Size = _result_spectrum("Size", float, "px", "Size", "%.3f", "radius of gyration (ring radius for "
                            "locate_brightfield_ring)", "size")
    Eccentricity = _result_spectrum("Eccentricity", float, "1", "Eccentricity", "%.3f", "0 = round", "eccentricity")
    Signal = _result_spectrum("Signal", float, "1", "Signal", "%.6g", "peak of the band-passed image", "signal")
    Isolated = _result_spectrum("Isolated", bool, "bool", "Isolated", "%s", "a single particle (Multiplicity 1) "
                                "with no other feature, nothing else in the image and no image edge within "
                                "IsolationRadius", "isolated")
    NearestNeighbour = _result_spectrum("NearestNeighbour", float, "px", "Nearest neighbour", "%.3f",
                                        "distance to the nearest other feature, listed or seen only in the image "
                                        "(inf if none)", "nn_distance")
    Multiplicity = _result_spectrum("Multiplicity", int, "particles", "Multiplicity", "%d",
                                    "particles in the touching group of each detection: 1, 2, or 3 for three "
                                    "or more", "multiplicity")
    OnBrightArea = _result_spectrum("OnBrightArea", bool, "bool", "On bright area", "%s",
                                    "the detection sits on an extended bright area (a Pt marker), not on the "
                                    "membrane: not a particle, never isolated", "on_bright_area")

    @smart_attribute(dtype=str, unit="JSON", label="Table", format="%s",
                     doc="JSON rows {index, x, y, mass, size, ecc, signal, isolated, nn_distance, multiplicity, "
                         "on_bright_area}; [] "
                         "before Detect")
    def Table(self) -> str:
        return self._core.table()

    @smart_attribute(dtype=str, unit="JSON", label="Last result", format="%s",
                     doc="JSON {count, isolated, elapsed_ms, roi, source, image_shape, settings, timestamp} of the "
                         "last detection; {} before the first")
    def LastResult(self) -> str:
        return self._last_result()

    def _last_result(self) -> str:
        results = self._core.results
        if results is None:
            return "{}"
        return results.record(self._last_source).to_json()

    @smart_attribute(dtype=((np.uint8,),), max_dim_x=MAX_DIM, max_dim_y=MAX_DIM, unit="1",
                     label="Annotated image", format="%3d",
                     doc="source image stretched to 40..215 with isolated particles circled in white (255) and crowded "
                         "ones in black (0), each labelled with its Table index; SMART_NotReady before Detect")
    def AnnotatedImage(self) -> np.ndarray:
        return self._core.annotated_image(rgb=False)

    @smart_attribute(dtype=tango.DevEncoded, unit="RGB", label="Annotated image (colour)", format="VIDEO_IMAGE",
                     doc="the annotated image in colour (isolated green, crowded orange-red), as a LImA VIDEO_IMAGE "
                         "RGB24 payload: decode with taurus CodecFactory().getCodec('VIDEO_IMAGE')")
    def AnnotatedImageRGB(self) -> tuple[str, bytes]:
        return self._annotated_rgb()

    def _annotated_rgb(self) -> tuple[str, bytes]:
        """Encoded once per detection: a 2048^2 RGB payload is 12 MB, panels poll it."""
        results = self._core.results
        cached = self._encoded
        if cached is None or cached[0] is not results:
            cached = (results, encode_rgb24(self._core.annotated_image(rgb=True)))
            self._encoded = cached
        return "VIDEO_IMAGE", cached[1]

    @smart_attribute(dtype=tango.DevEncoded, unit="RGB", label="Annotated image (colour, JPEG)", format="JPEG_RGB",
                     doc="the colour annotated image as a JPEG (quality 95), Tango's JPEG_RGB encoding: what live "
                         "viewers that decode JPEG_RGB but not LImA's RGB24 VIDEO_IMAGE show in colour (lavue "
                         "--source tangoattr --channel rgb)")
    def AnnotatedImageJPEG(self) -> tuple[str, bytes]:
        return self._annotated_jpeg()

    def _annotated_jpeg(self) -> tuple[str, bytes]:
        """Encoded once per detection, like the RGB24 payload (a 2048^2 JPEG takes ~50 ms)."""
        results = self._core.results
        cached = self._jpeg
        if cached is None or cached[0] is not results:
            cached = (results, jpeg_rgb(self._core.annotated_image(rgb=True)))
            self._jpeg = cached
        return "JPEG_RGB", cached[1]


def main(argv: list[str] | None = None) -> int:
    return run_server([ParticleDS], argv)


if __name__ == "__main__":
    raise SystemExit(main())
