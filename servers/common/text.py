"""Text at the Tango border, free of Tango so cores and argument parsing can use it.

A ``DevString`` carries bytes that pytango encodes and decodes as Latin-1; a Python string
with any other character cannot be sent (pytango raises inside the reply, the Status or the
event). These three functions are the only crossing points (see
:mod:`servers.common.tango_glue` for where they are applied).
"""

from __future__ import annotations

import unicodedata


def tango_text(text: object) -> str:
    """``text`` as a string Tango can carry: Latin-1 characters unchanged, every other one as
    a visible escape (``\\u2013``, ``\\U0001f600``), so nothing can fail on its way out."""
    value = text if isinstance(text, str) else str(text)
    return value.encode("latin-1", "backslashreplace").decode("latin-1")


def text_in(value: str | bytes) -> str:
    """A plain ``DevString`` argument as the text the client meant.

    pytango sends a ``str`` as Latin-1 and refuses any other character, so a client with
    a name outside Latin-1 sends its UTF-8 bytes instead; they arrive here as Latin-1
    look-alikes ("Ã©"). Text whose bytes are valid UTF-8 with non-ASCII characters is read
    as UTF-8 (real Latin-1 text practically never is); anything else is kept as it came.
    """
    if isinstance(value, bytes):
        raw = value
    else:
        try:
            raw = value.encode("latin-1")
        except UnicodeEncodeError:
            return value
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")
    return decoded


def text_out(value: str) -> str | bytes:
    """A reply string: itself when Latin-1 can carry it, else its UTF-8 bytes (what :func:`text_in`
    reads back), so a name sent as UTF-8 comes back exactly as sent."""
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace")
    return value


def describe_characters(text: str, bad: list[str] | set[str]) -> str:
    """'U+2013 EN DASH, U+1F600 GRINNING FACE' for the characters ``bad`` of ``text``, in order."""
    seen: list[str] = []
    for char in text:
        if char in bad and char not in seen:
            seen.append(char)
    return ", ".join(f"U+{ord(c):04X} {unicodedata.name(c, 'unnamed character')}" for c in seen[:8]) + (
        ", ..." if len(seen) > 8 else "")
