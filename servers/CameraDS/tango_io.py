"""The Tango-facing collaborators of the camera core: an image source that re-publishes
another device's image attribute, and the stage reader for StageMotors.

They sit apart from :mod:`servers.CameraDS.sources` so the core stays testable without a
control system; the shell plugs them in.
"""

from __future__ import annotations

import contextlib
import logging
import queue
from typing import Any

import numpy as np
import tango

from servers.CameraDS.sources import Source, SourceFrame, SourceLost, decode_lima_video, split_tango_target
from servers.common.tango_client import ProxyCache, devfailed_line

log = logging.getLogger(__name__)

PROXY_TIMEOUT_MS = 1500
STAGE_TIMEOUT_MS = 1000
"""Motor reads run in StageMonitor's workers (the frame waits 0.5 s at most); this bounds how
long a worker stays stuck on a hung Pool before it can try again."""


def _decode_value(value: Any) -> np.ndarray:
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        fmt, payload = value
        if fmt == "VIDEO_IMAGE":
            return decode_lima_video(bytes(payload))
        raise SourceLost(f"encoded images in format {fmt!r} are not supported; use a plain image attribute "
                         "or Lima's video_last_image (VIDEO_IMAGE)")
    data = np.asarray(value)
    if data.ndim != 2 or data.size == 0:
        raise SourceLost(f"the attribute delivered {data.shape} data, not an image")
    return data


class TangoImageSource(Source):
    """Re-publishes another device's image attribute: by change events when the device
    pushes or polls it (every new image arrives once), else by reading it at the
    TargetFrameRate. A device that stops answering is a :class:`SourceLost`."""

    kind = "tango"

    def __init__(self, spec: str, target: str) -> None:
        super().__init__(spec)
        self.device, self.attribute = split_tango_target(target)
        self._proxy: Any = None
        self._event_id: int | None = None
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=2)
        self.mode = "closed"

    def natural_dtype(self) -> np.dtype:
        try:
            proxy = tango.DeviceProxy(self.device)
            proxy.set_timeout_millis(PROXY_TIMEOUT_MS)
            info = proxy.get_attribute_config(self.attribute)
        except tango.DevFailed:
            return np.dtype(np.uint16)
        return np.dtype(np.uint8) if info.data_type == tango.CmdArgType.DevUChar else np.dtype(np.uint16)

    def open(self) -> None:
        self.close()
        try:
            proxy = tango.DeviceProxy(self.device)
            proxy.set_timeout_millis(PROXY_TIMEOUT_MS)
            proxy.ping()
        except tango.DevFailed as exc:
            raise SourceLost(f"device {self.device} does not answer ({devfailed_line(exc)})") from None
        self._proxy = proxy
        self._queue = queue.Queue(maxsize=2)
        try:
            self._event_id = proxy.subscribe_event(self.attribute, tango.EventType.CHANGE_EVENT, self._on_event)
            self.mode = "events"
        except tango.DevFailed as exc:
            log.info("no change events from %s/%s (%s); polling it instead", self.device, self.attribute,
                     devfailed_line(exc))
            self._event_id = None
            self.mode = "polling"

    def _on_event(self, event: Any) -> None:
        item = SourceLost(f"{self.device}/{self.attribute} sent an error event "
                          f"({devfailed_line(event.errors) or 'no detail'})") \
            if event.err else event.attr_value.value
        try:
            self._queue.put_nowait(item)
        except queue.Full:  # a slow consumer keeps the newest image, as a live view should
            with contextlib.suppress(queue.Empty):
                self._queue.get_nowait()
            self._queue.put_nowait(item)

    def read(self, timeout_s: float) -> SourceFrame | None:
        if self._proxy is None:
            self.open()
        if self.mode == "polling":
            try:
                value = self._proxy.read_attribute(self.attribute).value
            except tango.DevFailed as exc:
                raise SourceLost(f"cannot read {self.device}/{self.attribute} ({devfailed_line(exc)})") from None
            return SourceFrame(_decode_value(value))
        try:
            item = self._queue.get(timeout=timeout_s)
        except queue.Empty:
            try:
                self._proxy.ping()
            except tango.DevFailed as exc:
                raise SourceLost(f"device {self.device} stopped answering ({devfailed_line(exc)})") from None
            return None
        if isinstance(item, SourceLost):
            raise item
        if item is None:
            return None
        return SourceFrame(_decode_value(item))

    def close(self) -> None:
        proxy, event_id = self._proxy, self._event_id
        self._proxy, self._event_id, self.mode = None, None, "closed"
        if proxy is not None and event_id is not None:
            with contextlib.suppress(Exception):  # the device may already be gone
                proxy.unsubscribe_event(event_id)


class TangoStageReader:
    """Reads ``Position`` of each StageMotors device (Sardana motors or anything with a
    Position attribute). A motor that cannot be read is stamped ``None``, never guessed.

    The proxies do not retry a timed-out call (transparency reconnection off): cppTango's
    retry doubled every read of a hung Pool (a 1.5 s timeout came back after 6 s). A proxy,
    once built, is kept whatever its calls answer: the next call reconnects by itself (also to
    a restarted Pool), while building a new one against a hung server costs 3 s more.
    :class:`servers.CameraDS.stage.StageMonitor` runs :meth:`read_one` with a deadline."""

    def __init__(self, names: list[str]) -> None:
        self.names = list(names)
        self._proxies = ProxyCache(STAGE_TIMEOUT_MS, retry=False)

    def read_one(self, name: str) -> float:
        """``name``'s Position; raises (DevFailed, TypeError, ValueError) when it cannot be read."""
        return float(self._proxies.get(name).read_attribute("Position").value)

    def read(self) -> dict[str, float | None]:
        positions: dict[str, float | None] = {}
        for name in self.names:
            try:
                positions[name] = self.read_one(name)
            except (tango.DevFailed, TypeError, ValueError) as exc:
                log.debug("cannot read %s.Position: %s", name, exc)
                positions[name] = None
        return positions
