"""Facility mode of the launcher refuses a database that does not answer, and leaves nothing
behind. System tier because it asks the database through Tango."""

from __future__ import annotations

from pathlib import Path

import pytest

from clients.launcher import LaunchError, Stack


def test_facility_mode_refuses_a_database_that_does_not_answer(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TANGO_HOST", "127.0.0.1:1")  # nothing listens on port 1
    with pytest.raises(LaunchError, match="does not answer"):
        Stack(tmp_path / "run", facility=True, echo=False).up()
    assert not (tmp_path / "run" / "stack.json").exists()
