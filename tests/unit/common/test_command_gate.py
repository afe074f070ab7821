"""One command at a time per device, first come first served (servers.common.command_gate).

The gate is Tango-free: a device passes the release of its Tango monitor in as ``released``
(servers.common.device_base), which the device tests exercise; here nothing is released
unless a test passes its own ``released`` to see when the gate calls it."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest

from servers.common.command_gate import CommandGate
from servers.common.errors import NotReady


def test_callers_wait_and_are_served_in_arrival_order() -> None:
    gate = CommandGate(wait_s=30)
    order: list[int] = []
    first_inside = threading.Event()
    release_first = threading.Event()

    def first() -> None:
        with gate.turn(None, "Detect 0"):
            first_inside.set()
            release_first.wait(30)
            order.append(0)

    def later(i: int) -> None:
        with gate.turn(None, f"Detect {i}"):
            order.append(i)

    threads = [threading.Thread(target=first)]
    threads[0].start()
    first_inside.wait(30)
    for i in range(1, 5):
        threads.append(threading.Thread(target=later, args=(i,)))
        threads[-1].start()
        while len(gate._waiting) < i:  # arrival order is the order they queue in
            time.sleep(0.001)
    release_first.set()
    for thread in threads:
        thread.join(30)
    assert order == [0, 1, 2, 3, 4]
    assert not gate.busy


def test_a_caller_that_cannot_get_its_turn_is_refused_naming_what_runs() -> None:
    gate = CommandGate(wait_s=0.05)
    with gate.turn(None, "Detect"):
        done: list[BaseException] = []
        thread = threading.Thread(target=lambda: _try(gate, done))
        thread.start()
        thread.join(30)
    assert isinstance(done[0], NotReady) and "Detect has been running" in done[0].desc
    with gate.turn(None, "next"):  # the refused caller left no trace: the next one goes straight in
        assert gate.busy


def _try(gate: CommandGate, done: list[BaseException]) -> None:
    try:
        with gate.turn(None, "second"):
            pass
    except NotReady as exc:
        done.append(exc)


def test_an_exception_inside_releases_the_gate() -> None:
    gate = CommandGate(wait_s=0.05)
    with pytest.raises(ValueError), gate.turn(None, "failing"):
        raise ValueError("boom")
    assert not gate.busy


def test_only_a_caller_that_waits_releases_the_device() -> None:
    """A free gate is taken at once, holding the device; a caller that has to wait does so
    inside ``released(device)`` (for a Tango device: its monitor released meanwhile)."""
    released: list[str] = []

    @contextlib.contextmanager
    def release(device: str):  # type: ignore[no-untyped-def]
        released.append(device)
        yield

    gate = CommandGate(wait_s=0.05, released=release)
    with gate.turn("first device", "Detect"):
        assert released == []
        done: list[BaseException] = []
        thread = threading.Thread(target=lambda: _try_on(gate, "second device", done))
        thread.start()
        thread.join(30)
    assert released == ["second device"] and isinstance(done[0], NotReady)


def _try_on(gate: CommandGate, device: str, done: list[BaseException]) -> None:
    try:
        with gate.turn(device, "second"):
            pass
    except NotReady as exc:
        done.append(exc)
