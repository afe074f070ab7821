"""Python's cyclic garbage collector runs in the GUI thread only.

Why: Taurus polls attributes in a thread of its own, holding the polled attribute's lock while
it reads and notifies; a garbage collection that starts there runs another Taurus attribute's
``__del__``, which unsubscribes its Tango events and so waits for cppTango's event lock. That
lock is held by cppTango's keep-alive thread while it delivers a subscription's news to Taurus
-- which waits for the polled attribute's lock. Seen as a GUI (and a test process) frozen for
good, all three threads waiting. With automatic collection off and a periodic collection in the
Qt thread, which holds no Taurus lock, the ``__del__`` never runs under one.
"""

from __future__ import annotations

import gc
from typing import Any

COLLECT_EVERY_MS = 5000


def collect_in_this_thread_only(parent: Any, every_ms: int = COLLECT_EVERY_MS) -> Any:
    """Turn automatic collection off and collect every ``every_ms`` from the Qt event loop of
    the calling (GUI) thread; returns the QTimer (kept by ``parent``)."""
    from taurus.external.qt import Qt

    gc.disable()
    timer = Qt.QTimer(parent)
    timer.timeout.connect(gc.collect)
    timer.start(every_ms)
    return timer
