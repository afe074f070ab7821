"""Facility mode of the launcher without a database: start-up levels, refusals, Starter wrappers."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from clients.launcher import DEFAULT_CONFIG, LaunchError, Stack, StackConfig
from clients.starter import write_wrappers


def _places(tmp_path: Path) -> dict[str, str]:
    return {"repo": str(tmp_path), "run": str(tmp_path / "run"), "beamline": str(tmp_path / "b.json")}


def test_the_stack_configuration_names_a_level_for_every_server(tmp_path: Path) -> None:
    config = StackConfig.load(DEFAULT_CONFIG, _places(tmp_path))
    servers = [spec.name for spec in config.servers] + config.sardana_servers
    assert set(config.starter_levels) == set(servers)
    assert config.level_of("Pool/smart") < config.level_of("MacroServer/smart")
    assert config.level_of("SimMicroscope/smart") < config.level_of("CameraDS/smart")
    assert config.uses_beamline


def test_an_unlisted_server_starts_after_every_listed_level(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("starter:\n  levels:\n    A/x: 1\n    B/x: 3\nservers:\n  C/x:\n    C:\n      c/c/1: {}\n")
    config = StackConfig.load(path, _places(tmp_path))
    assert config.level_of("C/x") == 4
    assert not config.uses_beamline


@pytest.mark.parametrize("levels", ["[1, 2]", "{A/x: 0}", "{A/x: two}"])
def test_bad_levels_are_refused_with_the_expected_form(tmp_path: Path, levels: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(f"starter:\n  levels: {levels}\nservers:\n  C/x:\n    C:\n      c/c/1: {{}}\n")
    with pytest.raises(LaunchError, match="level >= 1"):
        StackConfig.load(path, _places(tmp_path))


def test_starter_without_facility_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LaunchError, match="--starter needs --facility"):
        Stack(tmp_path / "run", starter="somehost")


def test_a_wrapper_runs_the_entry_point_with_the_instance_in_the_run_dir(tmp_path: Path) -> None:
    """The wrapper Starter executes: ``<bin>/Exe <instance>`` becomes the command with the
    instance where ``"$@"`` stands, in the run directory, with TANGO_HOST, stdout on stderr."""
    run_dir = tmp_path / "run dir"  # a space: everything is quoted
    run_dir.mkdir()
    probe = ["/bin/sh", "-c", 'echo "$TANGO_HOST $SMART_RUN_DIR $(pwd) $*"', "sh", '"$@"', "-ORBendPoint", "x"]
    [wrapper] = write_wrappers(tmp_path / "bin", run_dir, "127.0.0.1:10000", {"ProbeDS": probe})
    assert os.access(wrapper, os.X_OK)
    result = subprocess.run([str(wrapper), "inst1"], capture_output=True, text=True, check=True)
    assert result.stdout == ""
    assert result.stderr.strip() == f"127.0.0.1:10000 {run_dir} {run_dir} inst1 -ORBendPoint x"
