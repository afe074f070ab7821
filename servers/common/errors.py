"""The SMART error vocabulary, free of Tango.

Cores raise these; the Tango shells turn them into ``DevFailed`` with the same
``reason`` (see :mod:`servers.common.tango_glue`). Keeping them Tango-free lets the
cores be unit-tested without a control system, while the reason codes stay the
public contract that macros and facility software branch on.
"""

from __future__ import annotations


class SmartError(Exception):
    """Base class: ``reason`` is the public code, ``desc`` says what to do."""

    reason = "SMART_Failed"

    def __init__(self, desc: str) -> None:
        super().__init__(desc)
        self.desc = desc

    def __str__(self) -> str:
        return f"{self.reason}: {self.desc}"


class BadArgument(SmartError):
    """The caller's input is wrong; nothing was changed."""

    reason = "SMART_BadArgument"


class NotFound(SmartError):
    """A named thing (slot, frame, file, device, path) does not exist."""

    reason = "SMART_NotFound"


class NotReady(SmartError):
    """The request is valid but a prerequisite is missing (no image, no calibration)."""

    reason = "SMART_NotReady"


class Failed(SmartError):
    """The request was valid but the computation or the hardware failed."""

    reason = "SMART_Failed"


class Unsafe(SmartError):
    """Refused because acting on it could move hardware somewhere wrong."""

    reason = "SMART_Unsafe"


class SourceLost(Failed):
    """An image source that exists stopped answering (a camera, another device's image, a file
    that disappeared): the device that reads it goes to FAULT or retries, and recovers by itself
    when the source answers again. Each server says in its interface which reason its users get
    (CameraDS: ``SMART_Failed``; ParticleDS's Detect: ``SMART_NotFound``)."""


ALL_REASONS = tuple(c.reason for c in (BadArgument, NotFound, NotReady, Failed, Unsafe))


def error_for_reason(reason: str, desc: str) -> SmartError:
    """The SMART error of the public ``reason`` code (another SMART device's refusal, passed on)."""
    for cls in (BadArgument, NotFound, NotReady, Failed, Unsafe):
        if cls.reason == reason:
            return cls(desc)
    return SmartError(desc)
