"""What every SMART Tango shell needs: error mapping, state reporting, start-up.

The cores raise :class:`servers.common.errors.SmartError`; the public contract is a
``DevFailed`` with the same reason. One decorator does that translation for every
command so that no shell can forget it, and unexpected exceptions become
``SMART_Failed`` instead of crashing a server that runs all night.

Text and Tango: a ``DevString`` carries bytes that pytango encodes and decodes as
Latin-1. A Python string with any other character (an en dash, ``画像``, an emoji) cannot
cross, and pytango then fails *inside* the reply, the Status or the event -- which used to
leave a device RUNNING with a Status it could never send again. Every string this project
hands to Tango therefore goes through :func:`tango_text` (replies: :func:`text_out`),
and every plain string argument through :func:`text_in`; JSON arguments and replies are
ASCII with ``\\uXXXX`` escapes, so any Unicode travels inside them exactly.

Concurrency: :class:`~servers.common.command_gate.CommandGate` (Tango-free) gives each
device one command at a time, in arrival order; :func:`monitor_released` is the Tango half:
the device monitor is released while a command waits and works, so State, Status and
attributes stay readable and a second client's command waits its turn instead of being
refused (docs/interface.md, "Several clients at once").
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import tango

from servers.common.errors import SmartError
from servers.common.text import tango_text, text_in, text_out

__all__ = ["monitor_released", "one_at_a_time", "raise_devfailed", "run_server",
           "smart_errors", "tango_text", "text_in", "text_out"]

F = TypeVar("F", bound=Callable[..., Any])

log = logging.getLogger(__name__)


def raise_devfailed(reason: str, desc: str, origin: str) -> None:
    """Raise a ``DevFailed`` carrying a SMART reason (used by shells and clients alike).

    Built from a ``DevError`` rather than ``Except.throw_exception``: the latter sends the
    description UTF-8 encoded while clients decode Latin-1 ("Âµm"), and fails on characters
    outside Latin-1.
    """
    error = tango.DevError()
    error.reason = tango_text(reason)
    error.desc = tango_text(desc)
    error.origin = tango_text(origin)
    error.severity = tango.ErrSeverity.ERR
    raise tango.DevFailed(error)


def smart_errors(function: F) -> F:
    """Translate core exceptions into SMART ``DevFailed`` errors for one command or attribute.

    ``DevFailed`` raised deliberately passes through untouched; any other exception is a
    bug or an unforeseen failure: it is logged with its traceback and reported as
    ``SMART_Failed`` so the client gets a sentence, and the server stays up.
    """

    @functools.wraps(function)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        origin = f"{type(self).__name__}.{function.__name__}"
        try:
            return function(self, *args, **kwargs)
        except tango.DevFailed:
            raise
        except SmartError as exc:
            raise_devfailed(exc.reason, exc.desc, origin)
        except Exception as exc:  # noqa: BLE001 - the server must survive anything a call does
            log.error("unexpected error in %s:\n%s", origin, traceback.format_exc())
            raise_devfailed(
                "SMART_Failed",
                f"internal error in {origin}: {type(exc).__name__}: {exc}. "
                "The previous results are unchanged; see the server log for details.",
                origin,
            )

    return wrapper  # type: ignore[return-value]


def one_at_a_time(function: F) -> F:
    """Run a command or attribute write holding the device's ``_gate`` (a
    :class:`~servers.common.command_gate.CommandGate`):
    the whole call, results and events included, happens before the next client's."""

    @functools.wraps(function)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        with self._gate.turn(self, function.__name__):
            return function(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def monitor_released(device: Any) -> Iterator[None]:
    """Release the Tango device monitor for a block that does not touch the device's Tango objects
    (no set_state/set_status/attribute values inside), so other clients are served meanwhile."""
    with tango.AutoTangoAllowThreads(device):
        yield


def run_server(classes: Sequence[type], argv: Sequence[str] | None = None) -> int:
    """Run a device server with loopback-only defaults unless the caller chose an endpoint.

    Passing ``-ORBendPoint`` keeps test and demo traffic on 127.0.0.1; at a facility the
    launcher or Starter passes its own endpoint and this default is not applied.
    """
    args = list(sys.argv if argv is None else argv)
    if len(args) < 2 or args[1].startswith("-"):
        name = classes[0].__name__
        sys.stderr.write(f"usage: {name} INSTANCE [tango options]\n  e.g. {name} smart\n")
        return 2
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s",
    )
    tango.server.run(tuple(classes), args=args)
    return 0
