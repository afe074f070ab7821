"""A Tango error as the sentence a user reads: one helper for every server. Free of Tango.

Whatever another device answers comes back as a ``DevFailed`` whose ``args`` are ``DevError``
records (``reason``, ``desc``, ``origin``); an error event carries the same list as
``errors``. Servers quote them inside their own ``SMART_*`` refusals and Status texts, so
they need them short: :func:`devfailed_line` (the first line of the first description),
:func:`devfailed_text` (``REASON: description`` of the first errors) and
:func:`devfailed_reason` (to branch on a reason). Duck-typed, so that cores (the camera's
stage monitor, which gets whatever a reader raised) use the same words without importing
Tango; :mod:`servers.common.tango_client` re-exports them for the Tango glue.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["devfailed_line", "devfailed_reason", "devfailed_text", "error_stack"]


def _is_dev_error(item: Any) -> bool:
    return hasattr(item, "reason") and hasattr(item, "desc")


def error_stack(error: Any) -> Sequence[Any]:
    """The ``DevError`` list of a ``DevFailed``, of an error event's ``errors``, or a stack given
    as such; empty for anything else."""
    if isinstance(error, BaseException):
        return tuple(item for item in error.args if _is_dev_error(item))
    if error is None or isinstance(error, str):
        return ()
    try:
        return tuple(item for item in error if _is_dev_error(item))
    except TypeError:
        return ()


def devfailed_reason(error: Any) -> str:
    """The reason of the first error ("" when there is none)."""
    stack = error_stack(error)
    return str(stack[0].reason) if stack else ""


def devfailed_text(error: Any, depth: int = 2) -> str:
    """``"REASON: description; REASON: description"`` of the first ``depth`` errors."""
    return "; ".join(f"{e.reason}: {str(e.desc).strip()}" for e in error_stack(error)[:depth])


def devfailed_line(error: Any) -> str:
    """The first line of the first error's description; for another exception its own ``desc``
    (a SMART error) or text, first line too; "" for an empty stack or an exception without text."""
    stack = error_stack(error)
    if stack:
        text = str(stack[0].desc)
    elif not isinstance(error, BaseException):  # an (empty) error stack: nothing to say
        return ""
    else:
        desc = getattr(error, "desc", None)
        text = str(desc if desc is not None else error)
    lines = text.strip().splitlines()
    return lines[0] if lines else ""
