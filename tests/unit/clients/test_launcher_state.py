"""A new stack starts without the last one's process table, Tango database and MacroServer
environment: a kept environment handed a second `make demo` of the same seed the first one's
``SmartScanProgress``, and it scanned nothing."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from clients.launcher import Stack, ended_like_ctrl_c


def test_the_macroserver_environment_of_every_dbm_flavour_is_stale_state(tmp_path: Path) -> None:
    stack = Stack(tmp_path / "stack", echo=False)
    stack.run_dir.mkdir(parents=True)
    kept = [stack.run_dir / "queue" / "smart_queue_1.sqlite", stack.run_dir / "sardana.yaml"]
    stale = [stack.run_dir / name for name in ("macroserver.env", "macroserver.env.dat", "macroserver.env.dir",
                                               "macroserver.env.bak", "tango.db", "stack.json", "pids.json")]
    for path in kept + stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    assert set(stale) <= set(stack.stale_state())
    assert not set(kept) & set(stack.stale_state())
    stack._prepare_run_dir()
    assert not any(path.exists() for path in stale)
    assert all(path.exists() for path in kept)


@pytest.mark.parametrize("ending", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_end_a_run_like_ctrl_c(ending: signal.Signals) -> None:
    """A run that gets SIGTERM or SIGHUP leaves through its ``finally`` (where its stack is taken
    down), with the shell's exit status for that signal, and the old handler comes back."""
    before = signal.getsignal(ending)
    cleaned = []
    with pytest.raises(SystemExit) as ended, ended_like_ctrl_c():
        try:
            os.kill(os.getpid(), ending)
            time.sleep(5)  # the handler raises at the next bytecode, long before this ends
        finally:
            cleaned.append(True)
    assert ended.value.code == 128 + ending and cleaned == [True]
    assert signal.getsignal(ending) is before
