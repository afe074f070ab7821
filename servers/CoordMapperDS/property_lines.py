"""The graph's JSON as lines of a Tango device property, and back. Free of Tango.

CoordMapperDS keeps its whole state in the device property ``GraphState``. A MySQL Tango
database stores each property line in a TEXT column (64 KiB), so a large graph is cut into
lines; some databases and tools trim lines, so the cut must not depend on whitespace.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["CHUNK_CHARS", "join_chunks", "split_chunks"]

CHUNK_CHARS = 8000
"""A MySQL Tango database stores each property line in a TEXT column (64 KiB): stay well below."""


def split_chunks(text: str, size: int = CHUNK_CHARS) -> list[str]:
    """The JSON ``text`` as property lines of at most ``size`` characters, free of whitespace.

    Some databases and tools trim property lines, so the JSON is re-written compactly and
    the spaces left inside its strings become the JSON escape ``\\u0020``: the lines can
    then be cut anywhere, and joining them gives JSON that decodes to the same value.
    """
    compact = json.dumps(json.loads(text), separators=(",", ":"), allow_nan=False).replace(" ", "\\u0020")
    return [compact[i:i + size] for i in range(0, len(compact), size)] or [compact]


def join_chunks(lines: Any) -> str:
    """The stored text from the property value (a list of lines, or one string)."""
    if lines is None:
        return ""
    if isinstance(lines, str):
        return lines
    return "".join(str(line) for line in lines)
