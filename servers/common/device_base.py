"""The one shape of a SMART device: state reporting, busy handling, proxies, error mapping.

Every server's device class derives from :class:`SmartDevice` and declares its interface
with :func:`smart_command` and :class:`smart_attribute`, so a newcomer who has read one
shell has read them all, and a change to how devices report state is one change here:

* **State and Status** are set in one place, :meth:`SmartDevice.report`, which always
  pushes ``State`` and ``Status`` change events. A device whose state lives elsewhere (a
  camera thread, motors that may come back) brings it up to date in
  :meth:`SmartDevice.refresh_state`, called before every State and Status read.
* **Busy**: :meth:`SmartDevice.busy` shows ``RUNNING`` while a command works with the
  Tango monitor released, and restores the previous State and Status when it fails.
* **Other devices** are reached through one :class:`~servers.common.tango_client.ProxyCache`
  per device, and a ``DevFailed`` becomes one sentence with
  :func:`~servers.common.tango_client.devfailed_text`.
* **Errors**: :func:`smart_command` and :class:`smart_attribute` put the SMART error
  mapping (:func:`~servers.common.tango_glue.smart_errors`) around every command, read
  and write, so no shell can forget it.

Naming: command arguments are called ``argin`` and attribute texts are given as ``doc=``.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

from tango import DevState
from tango.server import Device, attribute, command

from servers.common.command_gate import CommandGate
from servers.common.tango_client import ProxyCache
from servers.common.tango_glue import monitor_released, one_at_a_time, smart_errors, tango_text

__all__ = ["SmartDevice", "smart_attribute", "smart_command", "smart_errors"]


def _mapped(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` with the SMART error mapping, applied once however often it is asked for."""
    if getattr(function, "__smart_errors__", False):
        return function
    wrapped = smart_errors(function)
    wrapped.__smart_errors__ = True  # type: ignore[attr-defined]
    return wrapped


def smart_command(f: Callable[..., Any] | None = None, *, gated: bool = False, **kwargs: Any) -> Any:
    """``tango.server.command`` with the SMART error mapping built in.

    ``gated=True`` runs the command on the device's :class:`CommandGate` (one command at a
    time, a second client waits its turn; docs/interface.md, "Several clients at once").
    Used as ``@smart_command`` or ``@smart_command(dtype_in=str, ...)``.
    """
    if f is None:
        return functools.partial(smart_command, gated=gated, **kwargs)
    return command(_mapped(one_at_a_time(f) if gated else f), **kwargs)


class smart_attribute(attribute):  # noqa: N801 - used like tango.server.attribute
    """``tango.server.attribute`` with the SMART error mapping around its read and write methods.

    Works in every form ``attribute`` does: as a decorator, with ``fget=``/``fset=``, and
    with ``@X.write``/``@X.read``. Method names given as strings are looked up by Tango
    and stay unwrapped (they cannot fail in a way the client must be told about).
    ``gated_write=True`` runs writes on the device's :class:`CommandGate`, like a
    ``smart_command(gated=True)``: a setting never changes under a running command.
    """

    def __init__(self, fget: Any = None, *, gated_write: bool = False, **kwargs: Any) -> None:
        self._gated_write = gated_write
        if callable(fget):
            fget = _mapped(fget)
        if callable(kwargs.get("fget")):
            kwargs["fget"] = _mapped(kwargs["fget"])
        if callable(kwargs.get("fset")):
            kwargs["fset"] = self._write_method(kwargs["fset"])
        super().__init__(fget, **kwargs)

    def __call__(self, fget: Callable[..., Any]) -> smart_attribute:
        return type(self)(fget=fget, gated_write=self._gated_write, **self._kwargs)

    def _write_method(self, fset: Callable[..., Any]) -> Callable[..., Any]:
        if getattr(fset, "__smart_errors__", False):
            return fset
        return _mapped(one_at_a_time(fset) if self._gated_write else fset)

    def setter(self, fset: Callable[..., Any]) -> smart_attribute:
        return super().setter(self._write_method(fset))

    def getter(self, fget: Callable[..., Any]) -> smart_attribute:
        return super().getter(_mapped(fget))


class SmartDevice(Device):
    """Base of the SMART devices: one way to report state, be busy and reach other devices."""

    PROXY_RETRY: bool = True
    """Mode of :attr:`proxies` (:class:`~servers.common.tango_client.ProxyCache`): ``False`` keeps
    each proxy after a failure and switches Tango's silent reconnect-and-retry off."""

    def init_device(self) -> None:
        super().init_device()
        for name in ("State", "Status"):
            self.set_change_event(name, True, False)
        if not hasattr(self, "_gate"):  # kept over Init: a command may be waiting on it
            self._gate = CommandGate(released=monitor_released)
        if not hasattr(self, "proxies"):
            self.proxies = ProxyCache(retry=self.PROXY_RETRY)

    # --------------------------------------------------------------- state
    def set_status(self, status: str) -> None:
        """A Status that always reaches the client (any text, see :func:`tango_text`)."""
        super().set_status(tango_text(status))

    def report(self, state: DevState, status: str, *, only_changes: bool = False) -> None:
        """Set State and Status together and push their change events (the one place that does).

        ``only_changes`` pushes nothing when both are as they were: :meth:`refresh_state`
        runs on every read and must not send an event each time.
        """
        status = tango_text(status)
        if only_changes and state == self.get_state() and status == self.get_status():
            return
        self.set_state(state)
        self.set_status(status)
        self.push_change_event("State", state)
        self.push_change_event("Status", status)

    def refresh_state(self) -> None:
        """Bring State and Status up to date (with :meth:`report`) before a client reads them.

        Nothing to do for devices whose commands report every change; a device whose state
        lives elsewhere (an acquisition thread, motors) overrides this.
        """

    def dev_state(self) -> DevState:
        self.refresh_state()
        return super().dev_state()

    def dev_status(self) -> str:
        self.refresh_state()
        return super().dev_status()

    @contextlib.contextmanager
    def busy(self, doing: str) -> Iterator[None]:
        """RUNNING while a command works; a refused or failed command restores State and Status.

        The work inside runs with the Tango monitor released, so State, Status and the
        results stay readable meanwhile; it must touch only the core (whose results are
        immutable snapshots) and other devices, never this device's Tango objects. After
        the work, a State still RUNNING goes back to what it was; the command then reports
        its outcome.
        """
        state, status = self.get_state(), self.get_status()
        self.report(DevState.RUNNING, f"{doing}.")
        try:
            with monitor_released(self):
                yield
        except BaseException:
            self.report(state, status)
            raise
        if self.get_state() == DevState.RUNNING:
            self.report(state, status)
