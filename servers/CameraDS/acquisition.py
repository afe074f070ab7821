"""The acquisition thread: pulls frames from a source, stamps them, hands them on.

What the device shell needs from it, and why it is built this way:
- Every frame becomes one immutable :class:`Frame` (pixels + the metadata of *that*
  frame), swapped in atomically, so Image and FrameMetadata can never describe two
  different frames.
- The thread never stops on a source error. It reports FAULT with the source's own
  sentence, closes the source, waits (back-off 0.25 s doubling up to 2 s) and reopens;
  the first good frame returns it to RUNNING.
- ``stop`` never blocks on the thread. The Tango shell calls it while holding the
  device's monitor, and the thread may itself be waiting for that monitor to push an
  event; joining there would deadlock. Instead every run has a generation number and
  a thread whose generation is stale exits at its next check without publishing.
- At full speed the thread regularly pauses a little (``BREATHE_S``) so that client
  requests waiting for the device monitor get it.
- ``snap`` while streaming waits for the next frame, which the thread hands over
  *before* it publishes, so a Snap that holds the monitor cannot starve the thread.
- The stage is read through a :class:`~servers.CameraDS.stage.StageMonitor`: a motor that
  does not answer within its deadline is stamped ``None`` and the frame goes on; the state
  is then ALARM (frames, but their stage is unknown) with a Status naming the motor.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from servers.CameraDS.sources import Source, SourceFrame, SourceLost, StageReader, coerce
from servers.CameraDS.stage import as_monitor
from servers.common.errors import BadArgument, Failed, NotReady, SmartError
from servers.common.json_result import JsonResult

log = logging.getLogger(__name__)

ON, RUNNING, ALARM, FAULT = "ON", "RUNNING", "ALARM", "FAULT"
BACKOFF_START_S = 0.25
BACKOFF_MAX_S = 2.0
READ_TIMEOUT_S = 1.0
RATE_WINDOW = 30
BREATHE_EVERY_S = 0.05
BREATHE_S = 0.001
"""At full speed the thread still pauses 1 ms every 50 ms of back-to-back frames. Every push
takes the device's monitor, and the monitor is not fair: a thread that releases and re-takes
it at once starves the client requests waiting for it (a Stop at TargetFrameRate 0 with a
subscriber timed out after 3 s without this). 2 % of the time at most, only at full speed."""


@dataclass(frozen=True)
class Frame:
    """One published frame and everything stamped on it at acquisition time."""

    data: np.ndarray
    number: int
    timestamp: float
    exposure_ms: float | None
    gain: float | None
    pixel_size_um: float
    stage: dict[str, float | None]
    source: str

    def metadata(self) -> FrameMetadata:
        """The FrameMetadata attribute (also written into saved TIFFs)."""
        return FrameMetadata(self.number, self.timestamp, self.exposure_ms, self.gain, self.pixel_size_um,
                             dict(self.stage), int(self.data.shape[1]), int(self.data.shape[0]),
                             str(self.data.dtype), self.source)


@dataclass(frozen=True)
class FrameMetadata(JsonResult):
    """What a frame carries besides its pixels: its number, when it was taken (UNIX s), the
    exposure (ms) and gain the source accepted (None if it refused them), the pixel size (um),
    where the stage was (motor -> position, None if unread), its size and type, the source.
    ``as_dict()`` is the FrameMetadata JSON object, keys in the order of docs/interface.md."""

    frame_number: int
    timestamp: float
    exposure_ms: float | None
    gain: float | None
    pixel_size_um: float
    stage: dict[str, float | None]
    width: int
    height: int
    dtype: str
    source: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "frame_number": self.frame_number,
            "timestamp": self.timestamp,
            "exposure_ms": self.exposure_ms,
            "gain": self.gain,
            "pixel_size_um": self.pixel_size_um,
            "stage": dict(self.stage),
            "width": self.width,
            "height": self.height,
            "dtype": self.dtype,
            "source": self.source,
        }


@dataclass
class Settings:
    """User settings (memorized by the shell). ``target_rate_hz`` 0 = as fast as the source."""

    exposure_ms: float = 20.0
    gain: float = 1.0
    target_rate_hz: float = 10.0
    pixel_size_um: float = 1.0
    applied: set[str] = field(default_factory=set)
    """Settings the source has accepted; only those are stamped on frames."""


class Acquisition:
    """Owns one source and the streaming thread. ``publish`` is called with every new frame
    from the thread that produced it (the streaming thread, or the caller of ``snap``)."""

    def __init__(self, source: Source, stage: StageReader, publish: Callable[[Frame], None],
                 dtype: np.dtype | None = None, settings: Settings | None = None,
                 thread_context: Callable[[], AbstractContextManager[Any]] = nullcontext) -> None:
        self.source = source
        self.stage = as_monitor(stage)
        self.publish = publish
        self.dtype = np.dtype(dtype) if dtype is not None else source.natural_dtype()
        self.settings = settings or Settings()
        self._source_lock = threading.RLock()
        self._cond = threading.Condition()
        self._opened = False
        self._gen = 0
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._latest: Frame | None = None
        self._counter = 0
        self._times: deque[float] = deque(maxlen=RATE_WINDOW)
        self._fault: str | None = None
        self._attempts = 0
        self._last_error: str | None = None
        self._thread_context = thread_context
        """Entered for the whole life of the streaming thread: the device passes
        ``tango.EnsureOmniThread`` (``publish`` pushes Tango events from that thread, and PyTango
        asks that such threads be known to omniORB); this module stays free of Tango."""

    # ----------------------------------------------------------------- state
    @property
    def running(self) -> bool:
        return self._thread is not None and not self._stop_event.is_set()

    @property
    def state(self) -> str:
        if not self.running:
            return ON
        if self._fault:
            return FAULT
        return ALARM if self.stage.problems() else RUNNING

    def status(self) -> str:
        where = f"source {self.source.spec!r}"
        if self.running and self._fault:
            return (f"FAULT: {self._fault} The camera keeps trying to reconnect "
                    f"(attempt {self._attempts}, every {BACKOFF_MAX_S:g} s at most); Stop ends the attempts.")
        last = self._latest
        frame = f"last frame {last.number} ({last.data.shape[1]}x{last.data.shape[0]} {last.data.dtype})" \
            if last else "no frame yet"
        if self.running:
            text = f"Streaming from {where} at {self.frame_rate():.1f} frames/s; {frame}."
            problems = self.stage.problems()
            if problems:
                text = (f"ALARM: the stage position is unknown: {'; '.join(problems.values())}. Frames go on "
                        f"with stage null for {', '.join(problems)}; check the motors (Sardana Pool). The camera "
                        f"returns to RUNNING by itself when they answer. {text}")
            return text
        text = f"Idle ({where}); {frame}. Start streams, Snap takes one frame."
        if self._last_error:
            text += f" Last Snap failed: {self._last_error}"
        return text

    @property
    def latest(self) -> Frame | None:
        return self._latest

    def frame_rate(self) -> float:
        """Frames/s over the last frames; decays towards 0 when frames stop coming."""
        if not self.running:
            return 0.0
        times = list(self._times)
        if len(times) < 2:
            return 0.0
        span = times[-1] - times[0]
        gap = time.monotonic() - times[-1]
        interval = span / (len(times) - 1) if span > 0 else 0.0
        if gap > max(1.0, 2.0 * interval):
            span = time.monotonic() - times[0]
        return (len(times) - 1) / span if span > 0 else 0.0

    # -------------------------------------------------------------- settings
    def _apply(self, name: str, action: Callable[[], None]) -> None:
        with self._source_lock:
            action()
        self.settings.applied.add(name)

    def set_exposure(self, exposure_ms: float) -> None:
        _check_range(exposure_ms, "ExposureTime", "ms", 0.001, 1e6)
        self._apply("exposure", lambda: self.source.set_exposure(float(exposure_ms)))
        self.settings.exposure_ms = float(exposure_ms)

    def set_gain(self, gain: float) -> None:
        _check_range(gain, "Gain", "", 1e-3, 1e3)
        self._apply("gain", lambda: self.source.set_gain(float(gain)))
        self.settings.gain = float(gain)

    def set_target_rate(self, rate_hz: float) -> None:
        if not isinstance(rate_hz, (int, float)) or not math.isfinite(rate_hz) or not 0 <= rate_hz <= 1000:
            raise BadArgument(f"TargetFrameRate must be between 0 and 1000 Hz (0 = as fast as the source "
                              f"delivers); got {rate_hz!r}")
        with self._source_lock:
            self.source.set_frame_rate(float(rate_hz))
        self.settings.target_rate_hz = float(rate_hz)

    def set_pixel_size(self, pixel_size_um: float) -> None:
        if self.source.fixed_pixel_size_um is not None:
            raise NotReady(f"the {self.source.kind} source knows its own pixel size "
                           f"({self.source.fixed_pixel_size_um:g} um/px, from the zoom); change the zoom "
                           "instead of PixelSize")
        _check_range(pixel_size_um, "PixelSize", "um/px", 1e-6, 1e6)
        self.settings.pixel_size_um = float(pixel_size_um)

    @property
    def pixel_size_um(self) -> float:
        return self.source.fixed_pixel_size_um or self.settings.pixel_size_um

    # --------------------------------------------------------------- control
    def start(self) -> None:
        """Start streaming (no-op when already streaming)."""
        if self.running:
            return
        self._gen += 1
        self._stop_event = threading.Event()
        self._times.clear()
        self._fault = None
        self._attempts = 0
        self._last_error = None
        self._thread = threading.Thread(target=self._run, args=(self._gen, self._stop_event),
                                        name=f"camera-acquisition-{self._gen}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop streaming at once; never blocks on the thread (see the module docstring)."""
        self._stop_event.set()
        self._gen += 1
        self._fault = None
        with self._cond:
            self._cond.notify_all()

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop and release the source; a thread stuck in a driver call is abandoned."""
        self.stop()
        self.stage.close()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=0.2)
        if self._source_lock.acquire(timeout=timeout_s):
            try:
                self._close_source()
            finally:
                self._source_lock.release()

    def snap(self, timeout_s: float = 2.5) -> Frame:
        """One new frame: the next streamed one while running, else read now."""
        if self.running:
            return self._wait_next(timeout_s)
        deadline = time.monotonic() + timeout_s
        try:
            with self._source_lock:
                raw = None
                while raw is None:
                    self._ensure_open()
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise Failed(f"the source {self.source.spec!r} delivered no frame within "
                                     f"{timeout_s:g} s; check that it is producing images")
                    raw = self.source.read(min(remaining, READ_TIMEOUT_S))
                frame = self._make_frame(raw)
        except SourceLost as exc:
            self._close_source()
            self._last_error = exc.desc
            raise
        self._last_error = None
        self._deliver(frame)
        self.publish(frame)
        return frame

    def _wait_next(self, timeout_s: float) -> Frame:
        with self._cond:
            start = self._latest.number if self._latest else 0
            ok = self._cond.wait_for(lambda: (self._latest is not None and self._latest.number > start)
                                     or not self.running, timeout=timeout_s)
            latest = self._latest
        if ok and latest is not None and latest.number > start:
            return latest
        if self._fault:
            raise Failed(f"no frame: {self._fault}")
        raise Failed(f"no new frame within {timeout_s:g} s from {self.source.spec!r}; "
                     "lower the exposure or check the source")

    # ---------------------------------------------------------------- thread
    def _ensure_open(self) -> None:
        if not self._opened:
            self.source.open()
            self._opened = True

    def _close_source(self) -> None:
        self._opened = False
        try:
            self.source.close()
        except Exception:  # noqa: BLE001 - closing a broken source must not raise
            log.exception("closing the source failed")

    def _run(self, gen: int, stop: threading.Event) -> None:
        with self._thread_context():
            self._stream(gen, stop)

    def _stream(self, gen: int, stop: threading.Event) -> None:
        """The streaming thread: read, deliver, publish, pace; a source error is a fault with a
        growing back-off, never a dead thread."""
        backoff = BACKOFF_START_S
        rested = time.monotonic()
        while not stop.is_set():
            started = time.monotonic()
            try:
                frame = self._read_frame(stop)
            except Exception as exc:  # noqa: BLE001 - any source error is a fault, never a dead thread
                self._source_fault(exc)
                stop.wait(backoff)
                backoff = min(backoff * 2.0, BACKOFF_MAX_S)
                continue
            if frame is None or stop.is_set():
                continue
            backoff = BACKOFF_START_S
            if not self._hand_out(frame, gen, stop):
                break
            rested = self._pace(started, rested, stop)

    def _read_frame(self, stop: threading.Event) -> Frame | None:
        """One frame from the (re)opened source, or None when it had none in time or we stop."""
        with self._source_lock:
            if stop.is_set():
                return None
            self._ensure_open()
            raw = self.source.read(READ_TIMEOUT_S)
            return self._make_frame(raw) if raw is not None else None

    def _source_fault(self, exc: Exception) -> None:
        """Record the fault (said once per new message) and close the source for a fresh open."""
        message = exc.desc if isinstance(exc, SmartError) else f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, SmartError):
            log.exception("unexpected error from the source %s", self.source.spec)
        self._attempts += 1
        if self._fault != message:
            log.warning("camera source fault: %s", message)
        self._fault = message if message.endswith(".") else message + "."
        with self._source_lock:
            self._close_source()

    def _hand_out(self, frame: Frame, gen: int, stop: threading.Event) -> bool:
        """Clear a fault, deliver the frame to waiters and publish it; False when this stream
        was stopped or replaced meanwhile."""
        if self._fault:
            log.info("camera source is back: %s", self.source.spec)
        self._fault = None
        self._attempts = 0
        self._times.append(time.monotonic())
        self._deliver(frame)
        if stop.is_set() or gen != self._gen:
            return False
        try:
            self.publish(frame)
        except Exception:  # noqa: BLE001 - a failed push must not end the stream
            log.exception("publishing frame %d failed", frame.number)
        return True

    def _pace(self, started: float, rested: float, stop: threading.Event) -> float:
        """Wait out the rest of the frame period (TargetRate); at full speed, breathe now and then
        so that commands get the interpreter. Returns when the thread last rested."""
        rate = self.settings.target_rate_hz
        now = time.monotonic()
        delay = started + 1.0 / rate - now if rate > 0 else 0.0
        if delay > 0:
            stop.wait(delay)
            return time.monotonic()
        if now - rested >= BREATHE_EVERY_S:
            stop.wait(BREATHE_S)
            return time.monotonic()
        return rested

    def _make_frame(self, raw: SourceFrame) -> Frame:
        data = coerce(raw.data, self.dtype)
        data.setflags(write=False)
        if raw.stage is not None:
            stage = dict(raw.stage)
        else:
            try:
                stage = self.stage.read()
            except Exception as exc:  # noqa: BLE001 - a motor read error must not lose the frame
                log.warning("stage read failed: %s", exc)
                stage = {name: None for name in self.stage.names}
        self._counter += 1
        settings = self.settings
        exposure = raw.exposure_ms if raw.exposure_ms is not None else (
            settings.exposure_ms if "exposure" in settings.applied else None)
        return Frame(data=data, number=self._counter, timestamp=time.time(), exposure_ms=exposure,
                     gain=settings.gain if "gain" in settings.applied else None,
                     pixel_size_um=raw.pixel_size_um or settings.pixel_size_um, stage=stage,
                     source=self.source.spec)

    def _deliver(self, frame: Frame) -> None:
        with self._cond:
            self._latest = frame
            self._cond.notify_all()


def _check_range(value: float, name: str, unit: str, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low <= value <= high:
        raise BadArgument(f"{name} must be a finite number between {low:g} and {high:g} {unit}; got {value!r}")
