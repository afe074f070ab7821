"""Another device's image attribute as ParticleDS's input (the ``"attribute"`` of Detect).

Tango I/O that is not ParticleDS's own interface: reading one image from, say,
``smart/camera/1/Image`` and telling apart a typo in the name (refused, the device stays
healthy), a SMART refusal of the source (passed on with its reason) and a source that does
not answer (:class:`SourceLost`: the device goes to FAULT until the source answers again).
"""

from __future__ import annotations

import numpy as np
import tango

from servers.common.errors import BadArgument, NotFound, NotReady, SourceLost, error_for_reason
from servers.common.tango_client import ProxyCache, devfailed_line, devfailed_reason
from servers.common.tango_names import split_attribute_name

__all__ = ["SOURCE_TIMEOUT_MS", "image_device", "read_image_attribute"]

SOURCE_TIMEOUT_MS = 2000
"""Reading a 2048^2 uint16 frame takes ~20-300 ms between hosts; 2 s means the source is gone.
Below a default client's 3 s timeout (the read is not retried), so a caller gets the SMART_ answer
naming the lost source instead of a bare timeout (docs/deployment.md, "Several hosts")."""

# Reasons that mean "this name does not exist" (a user's typo): refused, the device stays healthy.
_UNKNOWN_NAME_REASONS = ("DB_DeviceNotDefined", "API_DeviceNotDefined", "API_AttrNotFound",
                         "API_AttributeNotFound", "API_WrongDeviceNameSyntax", "API_UnsupportedAttribute")


def image_device(name: str) -> tuple[str, str]:
    """``[tango://host:port/]domain/family/member/attribute[#dbase=no]`` -> (device, attribute)."""
    split = split_attribute_name(name)
    if split is None:
        raise BadArgument(
            f"'attribute' must be the full name of an image attribute, domain/family/member/attribute "
            f"(optionally tango://host:port/...), e.g. smart/camera/1/Image; got '{name}'"
        )
    return split


def read_image_attribute(name: str, proxies: ProxyCache) -> np.ndarray:
    """Read one image from another device's attribute, with SMART errors for every failure.

    ``proxies`` keeps one proxy per source device with no silent retry (``retry=False``):
    building a proxy to a device this process already talked to makes a call with Tango's
    default 3 s timeout before ours applies, and cppTango's reconnect-and-retry doubles the
    wait on a silent source -- each past a default client's 3 s (docs/deployment.md,
    "Several hosts"). A kept proxy reconnects by itself on its next call."""
    device, attr = image_device(name)
    try:
        value = proxies.get(device, SOURCE_TIMEOUT_MS).read_attribute(attr)
    except tango.DevFailed as exc:
        reason, desc = devfailed_reason(exc), devfailed_line(exc)
        if reason.startswith("SMART_"):
            raise error_for_reason(reason, f"the source {name} refused the read: {desc}") from None
        if reason in _UNKNOWN_NAME_REASONS:
            raise NotFound(f"there is no attribute {name} ({reason}: {desc}); check the device and "
                           "attribute names, e.g. smart/camera/1/Image") from None
        raise SourceLost(f"the image source {name} does not answer ({reason}: {desc}); start its "
                         "device server or check the network, then call Detect again") from None
    if value.data_format != tango.AttrDataFormat.IMAGE:
        raise BadArgument(f"{name} is a {value.data_format} attribute of type {value.type}, not an image; "
                          "give an image attribute such as smart/camera/1/Image")
    if value.value is None or np.size(value.value) == 0:
        raise NotReady(f"the image attribute {name} is empty (quality {value.quality}); acquire an image "
                       "first (e.g. Snap on the camera)")
    return np.asarray(value.value)
