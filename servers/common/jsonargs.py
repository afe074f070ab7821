"""Strict parsing of the one-JSON-object arguments of every SMART command.

docs/interface.md demands that unknown keys, wrong types, NaN/inf, empty or oversized
inputs are refused. pydantic models with ``extra="forbid"`` and
``allow_inf_nan=False`` say exactly that declaratively; this module adds the
JSON-level checks pydantic cannot see (size, NaN literals, top-level type) and
turns validation errors into one readable :class:`BadArgument` sentence.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from servers.common.errors import BadArgument
from servers.common.text import describe_characters, tango_text, text_in

MAX_ARGUMENT_CHARS = 4_000_000
"""Largest JSON argument accepted (about 100k point pairs); larger is a client bug."""


class StrictArgs(BaseModel):
    """Base for command argument models: no unknown keys, no NaN/inf, no coercion of
    strings to numbers (``"3"`` is not 3), ints accepted where floats are expected."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True, frozen=True)


M = TypeVar("M", bound=BaseModel)


def _refuse_constant(name: str) -> Any:
    raise BadArgument(f"{name} is not allowed in arguments; send finite numbers only")


def loads_object(text: str, *, what: str = "argument") -> dict[str, Any]:
    """Decode ``text`` as one JSON object, refusing empty, oversized and NaN input."""
    if isinstance(text, bytes):
        text = text_in(text)
    if not isinstance(text, str):
        raise BadArgument(f"the {what} must be a JSON object in a string")
    text = text_in(text)  # UTF-8 sent as bytes arrives as Latin-1 look-alikes; JSON escapes need nothing
    if not text.strip():
        raise BadArgument(f"the {what} is empty; send a JSON object such as {{\"key\": value}}")
    if len(text) > MAX_ARGUMENT_CHARS:
        raise BadArgument(
            f"the {what} is {len(text)} characters, more than the limit of "
            f"{MAX_ARGUMENT_CHARS}; split the request"
        )
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise BadArgument(f"the {what} is not valid JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(value, dict):
        raise BadArgument(f"the {what} must be a JSON object, not {type(value).__name__}")
    return value


def _describe(error: Mapping[str, Any]) -> str:
    location = ".".join(str(part) for part in error.get("loc", ())) or "argument"
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        return f"unknown key '{location}'"
    if kind == "missing":
        return f"missing key '{location}'"
    if kind == "string_pattern_mismatch":
        return _pattern_problem(location, error)
    if kind == "string_unicode":
        return (f"'{location}' holds an unpaired UTF-16 surrogate (U+D800..U+DFFF), which is not a character; "
                "send proper Unicode (a JSON encoder escapes it correctly)")
    return f"'{location}': {error.get('msg', 'invalid')}"


_CLASS_PATTERN = re.compile(r"^\^(\[[^\]]+\])\{(\d+),(\d+)\}\$$")


def _pattern_problem(location: str, error: Mapping[str, Any]) -> str:
    """Name the characters a name may not hold, for patterns like ``^[A-Za-z0-9_.\\-]{1,64}$``."""
    value, pattern = error.get("input"), str((error.get("ctx") or {}).get("pattern", ""))
    match = _CLASS_PATTERN.match(pattern)
    if not isinstance(value, str) or match is None:
        return f"'{location}': {error.get('msg', 'invalid')}"
    allowed = re.compile(match.group(1))
    low, high = int(match.group(2)), int(match.group(3))
    bad = {c for c in value if not allowed.fullmatch(c)}
    if bad:
        return (f"'{location}' {tango_text(repr(value))} holds characters that are not allowed: "
                f"{describe_characters(value, bad)}; use letters A-Z a-z, digits, '_', '-' or '.'")
    return f"'{location}' must be {low} to {high} characters long, got {len(value)}"


def parse_args(text: str, model: type[M], *, what: str = "argument") -> M:
    """Parse and validate a command argument into ``model`` or raise :class:`BadArgument`."""
    data = loads_object(text, what=what)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors()[:5])
        allowed = ", ".join(sorted(model.model_fields))
        raise BadArgument(f"bad {what}: {problems} (allowed keys: {allowed})") from None


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _to_plain(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def dumps(result: Any) -> str:
    """Encode a result as JSON: numpy types become plain ones, non-finite floats ``null``."""
    return json.dumps(_to_plain(result), allow_nan=False)
