"""Tango names as text: which device an attribute name belongs to. Free of Tango.

One parser for every place that takes ``[tango://host:port/]domain/family/member/attribute``
(a camera's ``Source = tango:...``, ParticleDS's ``"attribute"`` argument), so they accept
the same names; each caller words its own refusal.
"""

from __future__ import annotations

import re

__all__ = ["split_attribute_name"]

_TRL = re.compile(r"^(tango://[^/]+/)(.*)$", re.IGNORECASE)


def split_attribute_name(name: str) -> tuple[str, str] | None:
    """``[tango://host:port/]domain/family/member/attribute[#dbase=no]`` -> (device, attribute).

    The host prefix and the no-database suffix ``#dbase=no`` stay on the device name (a
    ``DeviceProxy`` needs them). None when ``name`` is not of that form.
    """
    text, hash_sign, fragment = name.strip().partition("#")
    match = _TRL.match(text)
    prefix, rest = (match.group(1), match.group(2)) if match else ("", text)
    parts = rest.split("/")
    if len(parts) != 4 or not all(part.strip() for part in parts):
        return None
    return prefix + "/".join(parts[:3]) + hash_sign + fragment, parts[3]
