"""The stack's configuration through dsconfig JSON: export, apply to a fresh database, round trip.

Export reads the running stack's Tango database; a second `smart up` (its own embedded
database, fresh) registers the servers from that file alone and starts them; the devices
then hold the same properties and exporting again gives the same file. MAX IV's own
``json2tango`` reads the exported file against the running database and finds nothing to
change: the files are theirs, not a look-alike.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tango

from clients import dsconfig_io
from clients.cli import main
from clients.launcher import DEFAULT_CONFIG, Stack, StackConfig
from macros.smart_calls import proxy as device_proxy

pytestmark = pytest.mark.system


def _servers(path: Path) -> dict:
    return json.loads(path.read_text())["servers"]


def test_export_apply_to_a_fresh_database_and_back(stack: Stack, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    exported = tmp_path / "smart.json"
    assert main(["config", "export", str(exported), "--tango-host", stack.tango_host]) == 0
    servers = StackConfig.load(DEFAULT_CONFIG, stack.places()).servers
    devices = sum(len(spec.devices) for spec in servers)
    assert f"{len(servers)} server(s), {devices} device(s)" in capsys.readouterr().out
    # the database holds what the YAML says, expanded for this run, and what servers wrote
    # themselves (the simulated microscope stores its FaultCodes and ZoomLevels): both are exported
    from_yaml = dsconfig_io.from_stack_config(StackConfig.load(DEFAULT_CONFIG, stack.places()), "yaml")
    held = {spec.name: spec.devices for spec in dsconfig_io.server_specs(json.loads(exported.read_text()))}
    for spec in dsconfig_io.server_specs(from_yaml):
        assert held[spec.name].keys() == spec.devices.keys()
        for device, (class_name, props) in spec.devices.items():
            assert held[spec.name][device][0] == class_name
            assert {k: held[spec.name][device][1].get(k) for k in props} == props, device
    assert held.keys() == {spec.name for spec in dsconfig_io.server_specs(from_yaml)}

    # dsconfig's own tool, as a facility runs it: a dry run against the same database changes nothing
    tool = subprocess.run([str(Path(sys.executable).parent / "json2tango"), "--no-colors", str(exported)],
                          env={**os.environ, "TANGO_HOST": stack.tango_host}, capture_output=True, text=True,
                          timeout=120, check=False)
    assert tool.returncode == 0, tool.stdout + tool.stderr
    assert "No changes needed in Tango DB" in tool.stderr

    # a fresh database: `smart up --dsconfig` registers the servers from the file alone
    bare = tmp_path / "no-servers.yaml"
    bare.write_text("servers: {}\n")
    fresh = Stack(tmp_path / "fresh", bare, echo=False, beamline=stack.beamline, dsconfig=exported)
    try:
        host = fresh.up()
        assert host != stack.tango_host
        for spec in dsconfig_io.server_specs(json.loads(exported.read_text())):
            for device, (_class_name, props) in spec.devices.items():
                proxy = device_proxy(f"tango://{host}/{device}", 5000)
                proxy.state()  # the device runs
                if props:
                    held = proxy.get_property(list(props))
                    assert {k: list(v) for k, v in held.items()} == props, device
        again = tmp_path / "again.json"
        assert main(["config", "export", str(again), "--tango-host", host]) == 0
        assert _servers(again) == _servers(exported)
        # applying the same file again: nothing to do
        assert main(["config", "apply", str(again), "--tango-host", host]) == 0
        assert "0 database call(s) made" in capsys.readouterr().out
    finally:
        fresh.down(quiet=True)


def test_apply_changes_a_property_and_dry_run_writes_nothing(stack: Stack, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    exported = tmp_path / "smart.json"
    assert main(["config", "export", str(exported), "--tango-host", stack.tango_host]) == 0
    data = json.loads(exported.read_text())
    mapper = data["servers"]["CoordMapperDS"]["smart"]["CoordMapperDS"]["smart/coordmapper/1"]["properties"]
    mapper["Comment"] = ["set through dsconfig"]
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(data))
    db = tango.Database(*stack.tango_host.split(":"))
    try:
        assert main(["config", "apply", "--dry-run", str(changed), "--tango-host", stack.tango_host]) == 0
        assert "1 database call(s) planned (nothing written" in capsys.readouterr().out
        assert not db.get_device_property("smart/coordmapper/1", ["Comment"])["Comment"]
        assert main(["config", "apply", str(changed), "--tango-host", stack.tango_host]) == 0
        assert "put_device_property smart/coordmapper/1" in capsys.readouterr().out
        assert list(db.get_device_property("smart/coordmapper/1", ["Comment"])["Comment"]) == ["set through dsconfig"]
        # the file without it removes it again (dsconfig's full-replace semantics for these servers)
        assert main(["config", "apply", str(exported), "--tango-host", stack.tango_host]) == 0
    finally:
        db.delete_device_property("smart/coordmapper/1", ["Comment"])
    assert not db.get_device_property("smart/coordmapper/1", ["Comment"])["Comment"]


def test_a_broken_file_is_refused_before_the_database_is_touched(stack: Stack, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"servers": {"CameraDS": {"smart": {"CameraDS": {"smart/camera/1": '
                      '{"properties": {"Source": "sim"}}}}}}}')
    assert main(["config", "apply", str(broken), "--tango-host", stack.tango_host]) == 1
    err = capsys.readouterr().err
    assert "SMART_BadConfig" in err and "properties/Source: 'sim' is not of type 'array'" in err
    db = tango.Database(*stack.tango_host.split(":"))
    assert list(db.get_device_property("smart/camera/1", ["Source"])["Source"]) == ["sim"]
