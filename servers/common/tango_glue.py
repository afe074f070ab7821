"""What every SMART Tango shell needs: error mapping, state reporting, start-up.

The cores raise :class:`servers.common.errors.SmartError`; the public contract is a
``DevFailed`` with the same reason. One decorator does that translation for every
command so that no shell can forget it, and unexpected exceptions become
``SMART_Failed`` instead of crashing a server that runs all night.
"""

from __future__ import annotations

import functools
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import tango

from servers.common.errors import SmartError

F = TypeVar("F", bound=Callable[..., Any])

log = logging.getLogger(__name__)


def raise_devfailed(reason: str, desc: str, origin: str) -> None:
    """Raise a ``DevFailed`` carrying a SMART reason (used by shells and clients alike)."""
    tango.Except.throw_exception(reason, desc, origin)


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
