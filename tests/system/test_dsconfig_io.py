"""The dsconfig JSON of the stack, without a database: YAML -> JSON, schema checks, JSON -> servers.

System tier because MAX IV's dsconfig library (its schema and formatting) imports tango, not
because a device runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clients import dsconfig_io
from clients.cli import main
from clients.launcher import DEFAULT_CONFIG, StackConfig

PLACES = {"repo": "/repo", "run": "/run", "beamline": "/run/beamline.json"}


def test_the_yaml_becomes_dsconfig_json_that_dsconfig_own_schema_accepts(tmp_path: Path) -> None:
    config = StackConfig.load(DEFAULT_CONFIG, PLACES)
    path = dsconfig_io.write(dsconfig_io.from_stack_config(config, "smart.yaml"), tmp_path / "smart.json")
    data = json.loads(path.read_text())
    camera = data["servers"]["CameraDS"]["smart"]["CameraDS"]["smart/camera/1"]["properties"]
    # every value is a list of strings, lists stay lists, {beamline} is expanded
    assert camera["StageMotors"] == ["samx", "samy"]
    assert camera["Source"] == ["sim"]
    assert camera["SimBeamline"] == ["/run/beamline.json"]
    # a device without properties is kept, as an empty entry
    assert data["servers"]["ParticleDS"]["smart"]["ParticleDS"]["smart/particles/1"] == {}
    # two classes in one server (the simulated microscope and its back channel)
    assert set(data["servers"]["SimMicroscope"]["smart"]) == {"SimMicroscope", "SimMicroscopeSimControl"}
    assert data["_version"] == 2


def test_server_specs_give_back_the_yaml_servers() -> None:
    """YAML -> JSON -> what the launcher starts: the same servers, devices, classes and properties
    (as the strings Tango stores)."""
    config = StackConfig.load(DEFAULT_CONFIG, PLACES)
    specs = dsconfig_io.server_specs(dsconfig_io.from_stack_config(config, "x"))
    assert [s.name for s in specs] == [s.name for s in config.servers]
    for spec, original in zip(specs, config.servers, strict=True):
        assert spec.devices.keys() == original.devices.keys()
        for device, (class_name, props) in spec.devices.items():
            assert class_name == original.devices[device][0]
            assert props == {k: [str(x) for x in (v if isinstance(v, list) else [v])]
                             for k, v in original.devices[device][1].items()}


def test_broken_json_is_refused_with_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"servers": {"CameraDS": {"smart": {},}}}')
    with pytest.raises(dsconfig_io.DsconfigError, match=r"not valid JSON: .* line 1, column 39.*trailing commas"):
        dsconfig_io.load(bad)


@pytest.mark.parametrize(("document", "message"), [
    ({"servers": {"CameraDS": {"smart": {"CameraDS": {"not-a-device-name": {}}}}}},
     r"at servers/CameraDS/smart/CameraDS: 'not-a-device-name' does not match"),
    ({"servers": {"CameraDS": {"smart": {"CameraDS": {"smart/camera/1": {"properties": {"Source": "sim"}}}}}}},
     r"at servers/CameraDS/smart/CameraDS/smart/camera/1/properties/Source: 'sim' is not of type 'array'"),
    ({"servers": {}}, "names no servers"),
    ({"server": {}}, r"at \(top level\): Additional properties"),
])
def test_a_file_that_breaks_the_dsconfig_schema_is_refused_naming_the_place(
        tmp_path: Path, document: dict, message: str) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(document))
    with pytest.raises(dsconfig_io.DsconfigError, match=message):
        dsconfig_io.load(path)


def test_cli_refuses_a_broken_file_with_one_smart_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    assert main(["config", "apply", str(bad), "--tango-host", "127.0.0.1:1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"smart config apply: SMART_BadConfig: {bad} is not valid JSON")
    assert len(err.splitlines()) == 1


def test_cli_exports_the_yaml_without_a_database(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "smart.json"
    assert main(["config", "export", str(out), "--from-yaml", "--run-dir", str(tmp_path)]) == 0
    servers = StackConfig.load(DEFAULT_CONFIG, PLACES).servers
    devices = sum(len(spec.devices) for spec in servers)
    assert f"{len(servers)} server(s), {devices} device(s)" in capsys.readouterr().out
    loaded = dsconfig_io.load(out)
    camera = loaded["servers"]["CameraDS"]["smart"]["CameraDS"]["smart/camera/1"]["properties"]
    assert camera["SimBeamline"] == [str(tmp_path.resolve() / "beamline.json")]


def test_smart_up_refuses_a_broken_dsconfig_before_starting_anything(tmp_path: Path) -> None:
    from clients.launcher import LaunchError, Stack

    bad = tmp_path / "bad.json"
    bad.write_text('{"servers": ')
    stack = Stack(tmp_path / "run", echo=False, dsconfig=bad)
    with pytest.raises(LaunchError, match=r"bad.json is not valid JSON: Expecting value at line 1, column 13"):
        stack.up()
    assert not stack.running() and not (tmp_path / "run" / "tango.db").exists()


def test_cli_export_to_an_unwritable_place_says_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "missing" / "smart.json"
    assert main(["config", "export", str(target), "--from-yaml", "--run-dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip() == (f"smart config export: SMART_BadConfig: cannot write {target}: "
                                               "No such file or directory; choose a writable path")
