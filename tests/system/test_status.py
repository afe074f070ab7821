"""`smart status` on a real (small) stack: its processes and devices while it runs, one line
"no stack running" and exit 0 after `down`, with no device asked (no CORBA TRANSIENT lines)."""

from __future__ import annotations

from pathlib import Path

import pytest

from clients import cli
from clients.launcher import Stack


def test_status_while_running_and_after_down(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "small.yaml"
    config.write_text("servers:\n  CoordMapperDS/st1:\n    CoordMapperDS:\n      test/coordmapper/st1: {}\n")
    run_dir = tmp_path / "run"
    stack = Stack(run_dir, config, echo=False)
    try:
        host = stack.up()
        assert cli.main(["status", "--run-dir", str(run_dir)]) == 0
        running = capsys.readouterr().out
        assert running.splitlines()[0] == f"TANGO_HOST={host}"
        assert "CoordMapperDS/st1" in running and "test/coordmapper/st1" in running and "ON" in running
    finally:
        assert stack.down(quiet=True) == []
    assert (run_dir / "stack.json").exists()  # what `down` leaves: the devices of a stack that is gone
    assert cli.main(["status", "--run-dir", str(run_dir)]) == 0
    out, err = capsys.readouterr()
    assert out == f"no stack running in {run_dir.resolve()} (`make up` or `smart up` starts one)\n"
    assert err == "" and "TRANSIENT" not in out
