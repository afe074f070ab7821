"""smart-gui collects garbage in its own (Qt) thread only (clients/gui/gc_thread.py)."""

from __future__ import annotations

import gc

from clients.gui.gc_thread import collect_in_this_thread_only


def test_automatic_collection_is_off_and_the_qt_loop_collects(qapp, qtbot, monkeypatch) -> None:  # noqa: ANN001
    collected: list[int] = []
    monkeypatch.setattr(gc, "collect", lambda *args: collected.append(1) or 0)
    timer = collect_in_this_thread_only(qapp, every_ms=20)
    try:
        assert not gc.isenabled()
        qtbot.waitUntil(lambda: len(collected) >= 2, timeout=5000)
    finally:
        timer.stop()
