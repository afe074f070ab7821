"""How a SMART server talks to *other* devices: cached proxies and Tango errors as sentences.

A server that reads a camera, a motor or a microscope keeps one proxy per device (creating
one costs a database round trip): :class:`ProxyCache`, which either forgets a proxy after a
failure (Tango's reconnect-and-retry on) or keeps it with no retry (the several-hosts mode).
Whatever fails comes back as a ``DevFailed`` whose text users need in one line:
:func:`devfailed_line` (the first line of the first description: the sentence a refusal
quotes) or :func:`devfailed_text` (reasons and descriptions of the first errors).
"""

from __future__ import annotations

import threading

import tango

from servers.common.error_text import devfailed_line, devfailed_reason, devfailed_text, error_stack

__all__ = ["DEFAULT_TIMEOUT_MS", "ProxyCache", "devfailed_line", "devfailed_reason", "devfailed_text", "error_stack"]

DEFAULT_TIMEOUT_MS = 3000
"""Tango's own client default: a device that takes longer is treated as gone."""


class ProxyCache:
    """One ``DeviceProxy`` per device name and timeout, created on first use and kept.

    Two modes, chosen per cache:

    * ``retry=True`` (Tango's client default): the proxy reconnects and retries a failed call
      once by itself; callers may :meth:`forget` a proxy after a failure.
    * ``retry=False`` ("keep the proxy, no retry"): cppTango's reconnect-and-retry is switched
      off, because it doubles the wait on a silent device past a client's 3 s timeout; the
      proxy is *kept* after a failure, because building a new one needs the database and,
      for a device this process already talked to, a call with Tango's default 3 s timeout
      before any timeout of ours applies. A kept proxy reconnects by itself on its next call,
      also to a restarted server, without the database (docs/deployment.md, "Several hosts").

    Proxies are keyed by ``(name, timeout_ms)``: a quick ping and a long read of the same device
    use two proxies instead of changing one proxy's timeout under another thread's call.
    """

    def __init__(self, timeout_ms: int = DEFAULT_TIMEOUT_MS, *, retry: bool = True) -> None:
        self.timeout_ms = timeout_ms
        self.retry = retry
        self._proxies: dict[tuple[str, int], tango.DeviceProxy] = {}
        self._lock = threading.Lock()

    def get(self, name: str, timeout_ms: int | None = None) -> tango.DeviceProxy:
        """The proxy of ``name`` (raises the ``DevFailed`` of a name that cannot be resolved)."""
        key = (name, self.timeout_ms if timeout_ms is None else int(timeout_ms))
        with self._lock:
            proxy = self._proxies.get(key)
        if proxy is not None:
            return proxy
        # Built outside the lock: building one may wait on a silent host or database, and must not
        # hold up a caller of another device (the stage monitor reads each motor in its own thread).
        proxy = tango.DeviceProxy(name)
        proxy.set_timeout_millis(key[1])
        if not self.retry:
            proxy.set_transparency_reconnection(False)
        with self._lock:
            return self._proxies.setdefault(key, proxy)

    def forget(self, name: str) -> None:
        """Drop the proxies of ``name`` after a failure: the next call connects afresh
        (only for ``retry=True`` caches; the others keep their proxies on purpose)."""
        with self._lock:
            for key in [key for key in self._proxies if key[0] == name]:
                del self._proxies[key]

    def clear(self) -> None:
        with self._lock:
            self._proxies.clear()
