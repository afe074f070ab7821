"""Settings shared by all tests, and the rule that keeps the two tiers honest.

``tests/unit`` needs no Tango: run alone (``make unit``, or pytest given only paths under
``tests/unit``), it runs with ``tango`` made unimportable, so a unit test that reaches Tango --
directly or through the module it tests -- fails at once instead of quietly needing a control
system. ``tests/unit/test_tiers.py`` checks the same in a fresh interpreter when both tiers run
together. Everything under ``tests/system`` is marked ``system``: ``-m system`` selects that
tier, ``-m "not system"`` leaves it out. Tests that take pytest-qt's ``qtbot`` or ``qapp`` are
also marked ``qt``: ``make test`` runs them in a process of their own (tests/tiers.py).

A pytest process that has printed its summary but does not exit within
:data:`EXIT_GRACE_S` (a Tango or Qt thread stuck at interpreter exit) prints every thread's
stack and exits with the session's status, instead of hanging until ``make test``'s timeout.
"""

from __future__ import annotations

import faulthandler
import gc
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# Qt widgets in tests render offscreen; set before any Qt import.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

TESTS = Path(__file__).resolve().parent
UNIT = TESTS / "unit"
SYSTEM = TESTS / "system"
TANGO_MODULES = ("tango", "PyTango")
"""The names under which PyTango can be imported; the unit tier may import neither."""
QT_FIXTURES = ("qtbot", "qapp")
EXIT_GRACE_S = 60.0
_session_status = 0


def only_unit_tests(args: list[str], invocation_dir: Path) -> bool:
    """True when every path pytest was given lies under tests/unit (no path: the whole suite)."""
    paths = [(invocation_dir / arg.split("::")[0]).resolve() for arg in args if not arg.startswith("-")]
    return bool(paths) and all(path == UNIT or UNIT in path.parents for path in paths)


def block_tango() -> None:
    """Make ``import tango`` (and ``import PyTango``) raise ImportError in this process."""
    for name in TANGO_MODULES:
        sys.modules[name] = None  # type: ignore[assignment]  # a None entry makes the import fail


def pytest_configure(config: pytest.Config) -> None:
    if not only_unit_tests(list(config.args), Path(config.invocation_params.dir)):
        return
    loaded = [name for name in TANGO_MODULES if sys.modules.get(name) is not None]
    if loaded:
        raise pytest.UsageError(f"{', '.join(loaded)} was imported before the unit tests started (by a pytest "
                                "plugin?); the unit tier runs without Tango: disable that plugin in setup.cfg")
    block_tango()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SYSTEM in item.path.parents:
            item.add_marker(pytest.mark.system)
        if any(name in getattr(item, "fixturenames", ()) for name in QT_FIXTURES):
            item.add_marker(pytest.mark.qt)


@pytest.fixture(autouse=True)
def _collect_garbage_in_the_main_thread(request: pytest.FixtureRequest) -> Iterator[None]:
    """Once a Qt test has run, no automatic garbage collection in this process (Taurus's polling
    threads live on), and one collection in the main thread after each Qt test -- as
    ``smart-gui`` does (clients/gui/gc_thread.py: a collection in Taurus's polling thread can
    deadlock it against cppTango's keep-alive thread)."""
    if request.node.get_closest_marker("qt") is None:
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.collect()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _session_status
    _session_status = int(exitstatus)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Arm the exit watchdog (module docstring): a Python thread exits with the session's status;
    faulthandler's own thread, which needs no GIL, ends the process if even that cannot run."""
    status = _session_status
    out = sys.__stderr__

    def stop_a_stuck_exit() -> None:
        time.sleep(EXIT_GRACE_S)
        if out is not None:
            out.write(f"\npytest has not exited {EXIT_GRACE_S:.0f} s after its summary; every thread's stack:\n")
            out.flush()
            faulthandler.dump_traceback(file=out, all_threads=True)
        os._exit(status)

    threading.Thread(target=stop_a_stuck_exit, name="exit-watchdog", daemon=True).start()
    if out is not None:
        faulthandler.dump_traceback_later(EXIT_GRACE_S + 30, exit=True, file=out)
